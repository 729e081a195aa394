/*
 * The subset of the QEMU TCG plugin API (version 1, as shipped by QEMU 7.2) that
 * insn_count.c uses, declared by hand: Debian's qemu-user 7.2 exports these symbols from
 * the qemu-aarch64 binary (`nm -D $(which qemu-aarch64) | grep qemu_plugin`) but ships no
 * qemu-plugin.h. Prototypes, enum values and struct layouts follow QEMU 7.2's
 * include/qemu/qemu-plugin.h (API v1: inline ops without the *_per_vcpu scoreboards of v2,
 * qemu_plugin_insn_data returning a pointer rather than copying as in v3).
 *
 * Pinned to QEMU_PLUGIN_VERSION 1: QEMU refuses to load a plugin whose qemu_plugin_version
 * is outside [info->version.min, info->version.cur]; a QEMU >= 8.2 (API v2+) needs a new
 * header (different inline-op and insn_data signatures), not just a new version number.
 */
#ifndef FIRMWARE_SIM_QEMU_PLUGIN_API_H_
#define FIRMWARE_SIM_QEMU_PLUGIN_API_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
#define QEMU_PLUGIN_VERSION 1

typedef uint64_t qemu_plugin_id_t;

typedef struct qemu_info_t {
  const char *target_name; /* e.g. "aarch64" */
  struct {
    int min;
    int cur;
  } version; /* plugin API levels this QEMU accepts */
  bool system_emulation;
  union {
    struct {
      int smp_vcpus;
      int max_vcpus;
    } system;
  };
} qemu_info_t;

struct qemu_plugin_tb;   /* opaque: a translation block */
struct qemu_plugin_insn; /* opaque: one translated guest instruction */

enum qemu_plugin_cb_flags {
  QEMU_PLUGIN_CB_NO_REGS,
  QEMU_PLUGIN_CB_R_REGS,
  QEMU_PLUGIN_CB_RW_REGS,
};

enum qemu_plugin_op {
  QEMU_PLUGIN_INLINE_ADD_U64,
};

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

/* Exported by the plugin. */
extern QEMU_PLUGIN_EXPORT int qemu_plugin_version;
QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv);

/* Provided by QEMU (resolved from the qemu-aarch64 executable when the plugin is dlopen()ed). */
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
/* Inline op executed before `insn` every time it executes: *(uint64_t *)ptr += imm. */
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn,
                                                enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata);

size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);

const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn); /* v1: a pointer */
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
/* Returns a g_malloc()ed string (free with g_free). */
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
const char *qemu_plugin_insn_symbol(const struct qemu_plugin_insn *insn);

void qemu_plugin_outs(const char *string);
bool qemu_plugin_bool_parse(const char *name, const char *val, bool *ret);

/* GLib (linked into qemu-aarch64): frees the strings qemu_plugin_insn_disas returns. */
void g_free(void *mem);

#endif /* FIRMWARE_SIM_QEMU_PLUGIN_API_H_ */

/*
 * insn_count: a QEMU 7.2 (plugin API v1) TCG plugin that counts executed guest AArch64
 * instructions inside regions the guest program marks itself, split into instruction
 * classes (decoded from the instruction word) and optionally per mnemonic (from
 * qemu_plugin_insn_disas). Writes one JSON file at exit.
 *
 *   qemu-aarch64 -plugin build/insn_count.so,out=counts.json[,mnemonics=on] ./prog
 *
 * ---- Region markers (guest side: firmware_sim/drivers/insn_region.h) -------------------
 * A marker is ONE instruction that is architecturally a no-op on every ARMv8-A core:
 *
 *     BEGIN(id):  movz xzr, #(0xB000 | id)     word 0xD296001F | (id << 5)
 *     END(id):    movz xzr, #(0xE000 | id)     word 0xD29C001F | (id << 5)     id = 0..255
 *
 * MOVZ with destination register 31 writes the zero register, i.e. it does nothing, so the
 * marked binary runs unchanged on real hardware. Compilers never emit a MOVZ to XZR, and the
 * two 8-bit tags (0xB0 / 0xE0 in the immediate's top byte) make an accidental match with
 * data or hand-written code practically impossible. One instruction (not a sequence) means
 * a marker can never be split across translation blocks. Markers themselves are not
 * counted. Why not a function symbol (qemu_plugin_insn_symbol): QEMU only knows the symbols
 * of the main executable, not of shared libraries, and a call costs instructions of its own;
 * why not an unallocated HINT: later architecture versions keep allocating HINT space
 * (BTI, PAC, CLRBHB, ...).
 *
 * Regions may nest and repeat; different ids are independent (id 0 = a whole inference,
 * other ids = its stages, say). For each id the plugin sums the instructions executed
 * between every BEGIN(id) and the following END(id) and counts the entries (so a driver that
 * runs N inferences inside region 0 reports total / N). A BEGIN of an already open id or an
 * END of a closed id is recorded as an error in the JSON (and ignored).
 *
 * ---- How counting works -----------------------------------------------------------------
 * At translation time each translation block is cut at its markers into segments; the
 * first instruction of a segment gets inline counter additions (total and per class) for
 * the whole segment, and with mnemonics=on every instruction adds 1 to its mnemonic's
 * counter. Counters are global and cumulative; a marker's callback snapshots them, and a
 * region's count is the sum of (END snapshot - BEGIN snapshot). A segment is counted when
 * its first instruction executes: exact unless an instruction faults mid-block (a guest
 * crash). The counters are not atomic: the guest must be single-threaded (all our drivers
 * are: XNNPACK runs with a NULL thread pool).
 *
 * ---- Classes (from the A64 top-level encoding, bits 28:25, and sub-fields) --------------
 *   int          data processing, immediate and register (scalar integer ALU)
 *   branch       branches, exception generation, system (incl. NOP/HINT/barriers)
 *   load/store   loads / stores to general-purpose registers (atomics and prefetch: load)
 *   simd_load/simd_store   loads / stores of SIMD&FP registers (V = 1, incl. LD1/ST1...)
 *   simd         Advanced SIMD data processing, vector and scalar forms, crypto
 *   fp           scalar floating point data processing (incl. FP <-> int conversion)
 *   other        SVE / SME / unallocated
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_plugin_api.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_BEGIN_BASE 0xD296001Fu /* movz xzr, #0xB000 */
#define MARK_END_BASE 0xD29C001Fu   /* movz xzr, #0xE000 */
#define MARK_ID_MASK (0xFFu << 5)
#define MAX_REGIONS 256
#define MAX_COUNTERS 1024 /* 1 total + classes + mnemonics */
#define MAX_ERRORS 32

enum {
  CLS_INT,
  CLS_BRANCH,
  CLS_LOAD,
  CLS_STORE,
  CLS_SIMD_LOAD,
  CLS_SIMD_STORE,
  CLS_SIMD,
  CLS_FP,
  CLS_OTHER,
  NUM_CLASSES
};
static const char *const kClassNames[NUM_CLASSES] = {
    "int", "branch", "load", "store", "simd_load", "simd_store", "simd", "fp", "other"};

#define IDX_TOTAL 0
#define IDX_CLASS0 1
#define IDX_MNEM0 (IDX_CLASS0 + NUM_CLASSES)

/* counters[] is the target of inline ops: it never moves. */
static uint64_t counters[MAX_COUNTERS];
static char *mnem_names[MAX_COUNTERS];
static int n_counters = IDX_MNEM0;
static int mnem_overflow_idx = -1; /* "<other>" once the table is full */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
  int open;
  uint64_t entries;
  uint64_t *begin; /* snapshot at BEGIN, MAX_COUNTERS */
  uint64_t *sum;   /* accumulated END - BEGIN */
} Region;
static Region regions[MAX_REGIONS];
static uint64_t n_markers;
static char errors[MAX_ERRORS][96];
static int n_errors;
static uint64_t n_errors_total;

static const char *out_path;
static bool opt_mnemonics;
static bool opt_disas_ok = true;

/* ----------------------------------------------------------------------------------- */
static int Classify(uint32_t w) {
  const uint32_t op0 = (w >> 25) & 0xFu; /* bits 28:25 */
  if ((op0 & 0xEu) == 0x8u) return CLS_INT;     /* 100x: DP immediate */
  if ((op0 & 0xEu) == 0xAu) return CLS_BRANCH;  /* 101x: branch / exception / system */
  if ((op0 & 0x7u) == 0x5u) return CLS_INT;     /* x101: DP register */
  if ((op0 & 0x7u) == 0x7u) {                   /* x111: DP SIMD & FP */
    /* bits 31:28 = x0x1: scalar floating point; else Advanced SIMD (vector/scalar/crypto) */
    const int b28 = (w >> 28) & 1, b30 = (w >> 30) & 1;
    return (b28 == 1 && b30 == 0) ? CLS_FP : CLS_SIMD;
  }
  if ((op0 & 0x5u) == 0x4u) { /* x1x0: loads and stores */
    const int v = (w >> 26) & 1;
    const uint32_t op29_28 = (w >> 28) & 3u;
    int is_load;
    if (op29_28 == 1u) {
      is_load = 1; /* load literal / PRFM literal */
    } else if (op29_28 == 3u) {
      /* load/store register (all addressing modes) and atomics: opc = bits 23:22 */
      const uint32_t opc = (w >> 22) & 3u;
      if (v)
        is_load = (opc & 1u) != 0; /* 00 str, 01 ldr, 10 str q, 11 ldr q */
      else
        is_load = opc != 0u; /* 00 str; 01 ldr; 1x ldrs / prfm; atomics (RMW) count as load */
    } else {
      is_load = (w >> 22) & 1; /* pairs, exclusives, SIMD structures: L = bit 22 */
    }
    if (v) return is_load ? CLS_SIMD_LOAD : CLS_SIMD_STORE;
    return is_load ? CLS_LOAD : CLS_STORE;
  }
  return CLS_OTHER; /* 0000 / 0001 / 0010 / 0011: reserved, SME, SVE, unallocated */
}

static int IsMarker(uint32_t w, int *is_begin, int *id) {
  if ((w & ~MARK_ID_MASK) == MARK_BEGIN_BASE) {
    *is_begin = 1;
  } else if ((w & ~MARK_ID_MASK) == MARK_END_BASE) {
    *is_begin = 0;
  } else {
    return 0;
  }
  *id = (int)((w >> 5) & 0xFFu);
  return 1;
}

static void AddError(const char *msg, int id) {
  ++n_errors_total;
  if (n_errors < MAX_ERRORS) {
    snprintf(errors[n_errors], sizeof errors[n_errors], "%s (region %d)", msg, id);
    ++n_errors;
  }
}

/* Marker callback: userdata = (id << 1) | is_begin. Runs on the guest's only vCPU. */
static void OnMarker(unsigned int vcpu_index, void *userdata) {
  (void)vcpu_index;
  const uintptr_t u = (uintptr_t)userdata;
  const int is_begin = (int)(u & 1u), id = (int)(u >> 1);
  Region *r = &regions[id];
  ++n_markers;
  if (r->begin == NULL) {
    r->begin = calloc(MAX_COUNTERS, sizeof(uint64_t));
    r->sum = calloc(MAX_COUNTERS, sizeof(uint64_t));
    if (r->begin == NULL || r->sum == NULL) {
      fprintf(stderr, "insn_count: out of memory\n");
      abort();
    }
  }
  if (is_begin) {
    if (r->open) {
      AddError("BEGIN of an open region ignored", id);
      return;
    }
    memcpy(r->begin, counters, sizeof counters);
    r->open = 1;
  } else {
    if (!r->open) {
      AddError("END of a region that is not open ignored", id);
      return;
    }
    for (int i = 0; i < MAX_COUNTERS; ++i) r->sum[i] += counters[i] - r->begin[i];
    r->open = 0;
    ++r->entries;
  }
}

/* Mnemonic counter index for the disassembly string `d` (first token). Caller holds lock. */
static int MnemonicIndex(const char *d) {
  char name[32];
  size_t n = 0;
  while (*d == ' ' || *d == '\t') ++d;
  while (d[n] != '\0' && d[n] != ' ' && d[n] != '\t' && n + 1 < sizeof name) {
    name[n] = d[n];
    ++n;
  }
  name[n] = '\0';
  if (n == 0) strcpy(name, "?");
  for (int i = IDX_MNEM0; i < n_counters; ++i)
    if (strcmp(mnem_names[i], name) == 0) return i;
  if (n_counters >= MAX_COUNTERS - 1) {
    if (mnem_overflow_idx < 0) {
      mnem_overflow_idx = n_counters++;
      mnem_names[mnem_overflow_idx] = strdup("<other>");
    }
    return mnem_overflow_idx;
  }
  mnem_names[n_counters] = strdup(name);
  return n_counters++;
}

static void FlushSegment(struct qemu_plugin_insn *first, const uint64_t *cls, uint64_t total) {
  if (first == NULL || total == 0) return;
  qemu_plugin_register_vcpu_insn_exec_inline(first, QEMU_PLUGIN_INLINE_ADD_U64,
                                             &counters[IDX_TOTAL], total);
  for (int c = 0; c < NUM_CLASSES; ++c)
    if (cls[c] != 0)
      qemu_plugin_register_vcpu_insn_exec_inline(first, QEMU_PLUGIN_INLINE_ADD_U64,
                                                 &counters[IDX_CLASS0 + c], cls[c]);
}

static void OnTbTrans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  const size_t n = qemu_plugin_tb_n_insns(tb);
  struct qemu_plugin_insn *first = NULL;
  uint64_t cls[NUM_CLASSES] = {0};
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    uint32_t w = 0;
    if (qemu_plugin_insn_size(insn) == 4) memcpy(&w, qemu_plugin_insn_data(insn), 4);
    int is_begin, rid;
    if (IsMarker(w, &is_begin, &rid)) {
      FlushSegment(first, cls, total);
      first = NULL;
      memset(cls, 0, sizeof cls);
      total = 0;
      qemu_plugin_register_vcpu_insn_exec_cb(insn, OnMarker, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(((uintptr_t)rid << 1) | (uintptr_t)is_begin));
      continue;
    }
    if (first == NULL) first = insn;
    ++cls[Classify(w)];
    ++total;
    if (opt_mnemonics && opt_disas_ok) {
      char *d = qemu_plugin_insn_disas(insn);
      if (d == NULL) {
        opt_disas_ok = false;
      } else {
        pthread_mutex_lock(&lock);
        const int mi = MnemonicIndex(d);
        pthread_mutex_unlock(&lock);
        g_free(d);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                   &counters[mi], 1);
      }
    }
  }
  FlushSegment(first, cls, total);
}

/* ----------------------------------------------------------------------------------- */
static void WriteCounts(FILE *f, const uint64_t *v, const char *indent) {
  fprintf(f, "\"insns\": %" PRIu64 ", \"classes\": {", v[IDX_TOTAL]);
  for (int c = 0; c < NUM_CLASSES; ++c)
    fprintf(f, "%s\"%s\": %" PRIu64, c ? ", " : "", kClassNames[c], v[IDX_CLASS0 + c]);
  fprintf(f, "}");
  if (opt_mnemonics) {
    fprintf(f, ",\n%s\"mnemonics\": {", indent);
    int first = 1;
    for (int i = IDX_MNEM0; i < n_counters; ++i) {
      if (v[i] == 0) continue;
      fprintf(f, "%s\"%s\": %" PRIu64, first ? "" : ", ", mnem_names[i], v[i]);
      first = 0;
    }
    fprintf(f, "}");
  }
}

static void OnExit(qemu_plugin_id_t id, void *userdata) {
  (void)id;
  (void)userdata;
  FILE *f = out_path ? fopen(out_path, "w") : stderr;
  if (f == NULL) {
    fprintf(stderr, "insn_count: cannot write %s\n", out_path);
    return;
  }
  fprintf(f, "{\"plugin\": \"insn_count\", \"api_version\": %d, \"mnemonics_enabled\": %s,\n",
          QEMU_PLUGIN_VERSION, (opt_mnemonics && opt_disas_ok) ? "true" : "false");
  fprintf(f, " \"class_names\": [");
  for (int c = 0; c < NUM_CLASSES; ++c) fprintf(f, "%s\"%s\"", c ? ", " : "", kClassNames[c]);
  fprintf(f, "],\n \"markers_executed\": %" PRIu64 ",\n \"all\": {", n_markers);
  WriteCounts(f, counters, "  ");
  fprintf(f, "},\n \"regions\": {");
  int first = 1;
  for (int r = 0; r < MAX_REGIONS; ++r) {
    if (regions[r].begin == NULL) continue;
    fprintf(f, "%s\n  \"%d\": {\"entries\": %" PRIu64 ", \"open_at_exit\": %s, ", first ? "" : ",",
            r, regions[r].entries, regions[r].open ? "true" : "false");
    WriteCounts(f, regions[r].sum, "   ");
    fprintf(f, "}");
    first = 0;
  }
  fprintf(f, "},\n \"errors_total\": %" PRIu64 ", \"errors\": [", n_errors_total);
  for (int e = 0; e < n_errors; ++e) fprintf(f, "%s\"%s\"", e ? ", " : "", errors[e]);
  fprintf(f, "]}\n");
  if (f != stderr) fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv) {
  if (info->target_name == NULL || strcmp(info->target_name, "aarch64") != 0) {
    fprintf(stderr, "insn_count: only aarch64 guests are supported (got %s)\n",
            info->target_name ? info->target_name : "?");
    return -1;
  }
  for (int i = 0; i < argc; ++i) {
    char *eq = strchr(argv[i], '=');
    if (eq == NULL) {
      fprintf(stderr, "insn_count: bad argument '%s' (want key=value)\n", argv[i]);
      return -1;
    }
    const size_t klen = (size_t)(eq - argv[i]);
    if (klen == 3 && strncmp(argv[i], "out", 3) == 0) {
      out_path = eq + 1;
    } else if (klen == 9 && strncmp(argv[i], "mnemonics", 9) == 0) {
      if (!qemu_plugin_bool_parse("mnemonics", eq + 1, &opt_mnemonics)) {
        fprintf(stderr, "insn_count: mnemonics=on|off, got '%s'\n", eq + 1);
        return -1;
      }
    } else {
      fprintf(stderr, "insn_count: unknown argument '%s' (known: out, mnemonics)\n", argv[i]);
      return -1;
    }
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, OnTbTrans);
  qemu_plugin_register_atexit_cb(id, OnExit, NULL);
  return 0;
}

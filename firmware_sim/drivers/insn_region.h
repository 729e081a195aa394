/*
 * Region markers for firmware_sim/qemu_plugin/insn_count.c (see its header comment).
 *
 *   INSN_REGION_BEGIN(id); ... code to count ...; INSN_REGION_END(id);   id: 0..255 constant
 *
 * Each marker is one `movz xzr, #(0xB000|id)` / `movz xzr, #(0xE000|id)`: a no-op on real
 * ARMv8 hardware (it writes the zero register), recognised by the plugin under qemu. The asm
 * is volatile with a "memory" clobber, so the compiler keeps it in program order with
 * respect to memory accesses and calls; put markers around calls or loops, not between two
 * register-only statements the compiler might move across it. On non-aarch64 hosts the
 * macros compile to nothing (so drivers also build natively).
 */
#ifndef FIRMWARE_SIM_INSN_REGION_H_
#define FIRMWARE_SIM_INSN_REGION_H_

#if defined(__aarch64__)
#define INSN_REGION_STR2(x) #x
#define INSN_REGION_STR(x) INSN_REGION_STR2(x)
#define INSN_REGION_BEGIN(id) \
  __asm__ __volatile__(".inst (0xD296001F | ((" INSN_REGION_STR(id) ") << 5))" ::: "memory")
#define INSN_REGION_END(id) \
  __asm__ __volatile__(".inst (0xD29C001F | ((" INSN_REGION_STR(id) ") << 5))" ::: "memory")
#else
#define INSN_REGION_BEGIN(id) ((void)0)
#define INSN_REGION_END(id) ((void)0)
#endif

#endif  // FIRMWARE_SIM_INSN_REGION_H_

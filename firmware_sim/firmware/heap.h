// Heap accounting of the firmware: every operator new / delete of the program (the kernel
// core's std::vector copies of weights and its workspaces, the options parsers' strings) and
// every XNNPACK allocation (its packed weights and operator state, through the xnn_allocator
// of xnn_initialize) is counted: bytes live now, peak, and the number of allocations, so the
// firmware can report the memory outside the TFLM arena and prove that Invoke() allocates
// nothing.
#ifndef FIRMWARE_SIM_FIRMWARE_HEAP_H_
#define FIRMWARE_SIM_FIRMWARE_HEAP_H_

#include <cstddef>

namespace firmware {
namespace heap {

struct Counter {
  std::size_t live = 0, peak = 0, allocations = 0;
};

// Program-wide counters: [0] operator new (C++ objects), [1] XNNPACK.
Counter& Cpp();
Counter& Xnn();

// malloc-backed allocation of `size` bytes aligned to `alignment` (a power of two <= 4096),
// counted in `c`; Free releases it. Both accept size 0 / nullptr.
void* Allocate(Counter& c, std::size_t size, std::size_t alignment);
void* Reallocate(Counter& c, void* p, std::size_t size);
void Free(Counter& c, void* p);

}  // namespace heap
}  // namespace firmware

#endif  // FIRMWARE_SIM_FIRMWARE_HEAP_H_

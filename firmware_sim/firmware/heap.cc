// Counted heap (heap.h): replaces the global operator new / delete of the firmware.
#include "firmware/heap.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace firmware {
namespace heap {

namespace {

// Every block carries a header right below the pointer handed out: the malloc'd base and
// the requested size (so frees are counted exactly, whatever the alignment).
struct Header {
  void* base;
  std::size_t size;
};
constexpr std::size_t kHeader = sizeof(Header);

Header* HeaderOf(void* p) { return reinterpret_cast<Header*>(p) - 1; }

}  // namespace

Counter& Cpp() {
  static Counter c;
  return c;
}
Counter& Xnn() {
  static Counter c;
  return c;
}

void* Allocate(Counter& c, std::size_t size, std::size_t alignment) {
  if (alignment < alignof(std::max_align_t)) alignment = alignof(std::max_align_t);
  if (alignment > 4096 || (alignment & (alignment - 1)) != 0) return nullptr;
  if (size > (std::size_t{1} << 40)) return nullptr;
  void* base = std::malloc(size + alignment + kHeader);
  if (base == nullptr) return nullptr;
  std::uintptr_t p = reinterpret_cast<std::uintptr_t>(base) + kHeader;
  p = (p + alignment - 1) & ~(static_cast<std::uintptr_t>(alignment) - 1);
  void* user = reinterpret_cast<void*>(p);
  Header h{base, size};
  std::memcpy(HeaderOf(user), &h, sizeof h);
  c.live += size;
  c.allocations += 1;
  if (c.live > c.peak) c.peak = c.live;
  return user;
}

void Free(Counter& c, void* p) {
  if (p == nullptr) return;
  Header h;
  std::memcpy(&h, HeaderOf(p), sizeof h);
  c.live -= h.size;
  std::free(h.base);
}

void* Reallocate(Counter& c, void* p, std::size_t size) {
  void* q = Allocate(c, size, alignof(std::max_align_t));
  if (q == nullptr || p == nullptr) return q;
  Header h;
  std::memcpy(&h, HeaderOf(p), sizeof h);
  std::memcpy(q, p, h.size < size ? h.size : size);
  Free(c, p);
  return q;
}

}  // namespace heap
}  // namespace firmware

#ifndef FIRMWARE_NO_COUNTED_NEW  // the ASan build keeps the sanitizer's own operator new
// ---- global operator new / delete: counted in heap::Cpp() ----
// Built with -fno-exceptions: an allocation failure ends the program with a message instead
// of throwing (nothrow forms return nullptr).
namespace {
void* NewOrDie(std::size_t size, std::size_t alignment) {
  void* p = firmware::heap::Allocate(firmware::heap::Cpp(), size, alignment);
  if (p == nullptr) {
    std::fputs("firmware: out of heap memory\n", stderr);
    std::abort();
  }
  return p;
}
}  // namespace

void* operator new(std::size_t size) { return NewOrDie(size, alignof(std::max_align_t)); }
void* operator new[](std::size_t size) { return NewOrDie(size, alignof(std::max_align_t)); }
void* operator new(std::size_t size, std::align_val_t a) {
  return NewOrDie(size, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t size, std::align_val_t a) {
  return NewOrDie(size, static_cast<std::size_t>(a));
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return firmware::heap::Allocate(firmware::heap::Cpp(), size, alignof(std::max_align_t));
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return firmware::heap::Allocate(firmware::heap::Cpp(), size, alignof(std::max_align_t));
}
void operator delete(void* p) noexcept { firmware::heap::Free(firmware::heap::Cpp(), p); }
void operator delete[](void* p) noexcept { firmware::heap::Free(firmware::heap::Cpp(), p); }
void operator delete(void* p, std::size_t) noexcept {
  firmware::heap::Free(firmware::heap::Cpp(), p);
}
void operator delete[](void* p, std::size_t) noexcept {
  firmware::heap::Free(firmware::heap::Cpp(), p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  firmware::heap::Free(firmware::heap::Cpp(), p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  firmware::heap::Free(firmware::heap::Cpp(), p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  firmware::heap::Free(firmware::heap::Cpp(), p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  firmware::heap::Free(firmware::heap::Cpp(), p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  firmware::heap::Free(firmware::heap::Cpp(), p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  firmware::heap::Free(firmware::heap::Cpp(), p);
}
#endif  // FIRMWARE_NO_COUNTED_NEW

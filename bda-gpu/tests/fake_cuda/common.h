// Shared by the fake CUDA libraries: the table of live "device" allocations (host memory), so
// that copies and GEMMs can check that every element they touch lies inside one allocation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>

namespace fake {
// Defined in cuda.cpp, used by cublas.cpp through the dynamic linker.
extern "C" bool bda_fake_in_allocation(const void* p, size_t bytes);

inline bool check_range(const char* what, const void* p, size_t bytes) {
    if (bytes == 0 || bda_fake_in_allocation(p, bytes)) return true;
    std::fprintf(stderr, "fake CUDA: %s touches %zu bytes at %p outside any allocation\n", what, bytes, p);
    return false;
}
}  // namespace fake

// A CPU stand-in for libnvrtc: accepts any program, checks that a real `sm_XY` architecture
// was requested, and returns a stub "CUBIN" (an ELF magic number) that the fake driver accepts.
#include <cstdlib>
#include <cstring>
#include <string>

enum : int { SUCCESS = 0, INVALID_INPUT = 3, INVALID_OPTION = 5, COMPILATION = 6 };

namespace {
struct Program {
    std::string source, log;
    bool compiled = false;
};
const char kImage[] = "\x7f" "ELF fake cubin";
const int kArchs[] = {75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121};
}  // namespace

extern "C" {
int nvrtcCreateProgram(void** prog, const char* src, const char*, int n_headers, const char* const* headers,
                       const char* const* names) {
    if (!prog || !src || n_headers < 0 || (n_headers > 0 && (!headers || !names))) return INVALID_INPUT;
    *prog = new Program{src, "", false};
    return SUCCESS;
}
int nvrtcDestroyProgram(void** prog) {
    delete (Program*)*prog;
    *prog = nullptr;
    return SUCCESS;
}
int nvrtcCompileProgram(void* prog, int n, const char* const* options) {
    Program* p = (Program*)prog;
    bool arch = false;
    for (int i = 0; i < n; ++i) arch = arch || std::strncmp(options[i], "--gpu-architecture=sm_", 22) == 0;
    if (!arch) {
        p->log = "fake nvrtc: no real architecture requested\n";
        return INVALID_OPTION;
    }
    p->compiled = true;
    return SUCCESS;
}
int nvrtcGetProgramLogSize(void* prog, size_t* size) { *size = ((Program*)prog)->log.size() + 1; return SUCCESS; }
int nvrtcGetProgramLog(void* prog, char* log) {
    std::strcpy(log, ((Program*)prog)->log.c_str());
    return SUCCESS;
}
int nvrtcGetCUBINSize(void* prog, size_t* size) {
    *size = ((Program*)prog)->compiled ? sizeof kImage : 0;
    return SUCCESS;
}
int nvrtcGetCUBIN(void* prog, char* out) {
    if (!((Program*)prog)->compiled) return INVALID_INPUT;
    std::memcpy(out, kImage, sizeof kImage);
    return SUCCESS;
}
int nvrtcGetNumSupportedArchs(int* n) { *n = (int)(sizeof kArchs / sizeof kArchs[0]); return SUCCESS; }
int nvrtcGetSupportedArchs(int* archs) {
    std::memcpy(archs, kArchs, sizeof kArchs);
    return SUCCESS;
}
const char* nvrtcGetErrorString(int) { return "fake NVRTC error"; }
}

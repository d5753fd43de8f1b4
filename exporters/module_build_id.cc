// Linked into every module (CMakeLists.txt): the build id it was compiled with, which the
// loader compares with its own (exporters/module_loader.h).
extern "C" const char* flowtracer_module_build_id() { return FLOWTRACER_BUILD_ID; }

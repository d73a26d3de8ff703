# ---- WebAssembly core (libllmc.wasm; pyllmc's device="wasm", see docs/wasm_core.md) ----
# Built as a nested CMake build of this same directory with the wasm32-wasi toolchain file
# (wasm32-wasi.cmake -> wasm_module.cmake) when a clang that targets wasm32-wasi with a WASI
# sysroot is found (LLMC_WASM=AUTO) or required (ON): the compiler is found as nvcc is for
# CUDA, by trying it. The native library is built exactly as without it. The module lands
# next to the native library (build/libllmc.wasm; in the pip build, the package directory).
set(LLMC_HAVE_WASM OFF)
if(NOT LLMC_WASM STREQUAL "OFF")
  set(_llmc_wasm_why "")
  if(LLMC_SANITIZE AND LLMC_WASM STREQUAL "AUTO")
    set(_llmc_wasm_why "sanitizer builds leave it out unless LLMC_WASM=ON")
  else()
    set(LLMC_WASI_SYSROOT "/usr" CACHE PATH "WASI sysroot for the wasm core (wasi-libc)")
    # newest first: clang >= 16 has the final relaxed-SIMD encoding (wasm_module.cmake)
    set(_llmc_wasm_candidates ${LLMC_WASM_CLANG} clang-16 clang-15 clang clang-14)
    set(_probe_dir "${CMAKE_CURRENT_BINARY_DIR}/wasm_probe")
    file(WRITE "${_probe_dir}/probe.c"
         "#include <stdlib.h>\n#include <stdio.h>\n__attribute__((visibility(\"default\"))) int llmc_probe(int n) { void *p = malloc((size_t)n); printf(\"%p\", p); free(p); return n; }\n")
    foreach(_cand ${_llmc_wasm_candidates})
      find_program(_llmc_cc_path NAMES ${_cand} NO_CACHE)
      if(NOT _llmc_cc_path)
        continue()
      endif()
      execute_process(
        COMMAND "${_llmc_cc_path}" --target=wasm32-wasi "--sysroot=${LLMC_WASI_SYSROOT}" -O1
                -msimd128 -mexec-model=reactor -Wl,--export-dynamic probe.c -o probe.wasm
        WORKING_DIRECTORY "${_probe_dir}" RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_VARIABLE _err)
      if(_rc EQUAL 0)
        set(LLMC_HAVE_WASM ON)
        set(_llmc_wasm_cc "${_llmc_cc_path}")
        break()
      endif()
      unset(_llmc_cc_path)
    endforeach()
    if(NOT LLMC_HAVE_WASM)
      set(_llmc_wasm_why "no clang that links a wasm32-wasi reactor with the sysroot ${LLMC_WASI_SYSROOT} (tried ${_llmc_wasm_candidates})")
    endif()
  endif()
  if(NOT LLMC_HAVE_WASM)
    if(LLMC_WASM STREQUAL "ON")
      message(FATAL_ERROR "LLMC_WASM=ON but the wasm core cannot be built: ${_llmc_wasm_why}")
    endif()
    message(STATUS "llmc: wasm core off (${_llmc_wasm_why})")
  endif()
endif()

if(LLMC_HAVE_WASM)
  message(STATUS "llmc: wasm core on (${_llmc_wasm_cc}, sysroot ${LLMC_WASI_SYSROOT})")
  include(ExternalProject)
  ExternalProject_Add(llmc_wasm_core
    SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}"
    BINARY_DIR "${CMAKE_CURRENT_BINARY_DIR}/wasm-core"
    CMAKE_ARGS
      "-DCMAKE_TOOLCHAIN_FILE=${CMAKE_CURRENT_SOURCE_DIR}/cmake/wasm32-wasi.cmake"
      "-DLLMC_WASM_CLANG=${_llmc_wasm_cc}" "-DLLMC_WASI_SYSROOT=${LLMC_WASI_SYSROOT}"
      "-DLLMC_SOURCE_DIR=${LLMC_SOURCE_DIR}" -DCMAKE_BUILD_TYPE=Release
      "-DCMAKE_RUNTIME_OUTPUT_DIRECTORY=${CMAKE_CURRENT_BINARY_DIR}"
    BUILD_ALWAYS ON            # the nested build decides what is out of date
    INSTALL_COMMAND ""
    BUILD_BYPRODUCTS "${CMAKE_CURRENT_BINARY_DIR}/libllmc.wasm")
  if(SKBUILD)
    install(FILES "${CMAKE_CURRENT_BINARY_DIR}/libllmc.wasm" DESTINATION pyllmc)
  else()
    include(GNUInstallDirs)
    install(FILES "${CMAKE_CURRENT_BINARY_DIR}/libllmc.wasm" DESTINATION ${CMAKE_INSTALL_LIBDIR})
  endif()
endif()

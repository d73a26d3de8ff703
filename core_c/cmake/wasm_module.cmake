# The C core as one WebAssembly module, libllmc.wasm (included by core_c/CMakeLists.txt when
# the toolchain is wasm32-wasi, i.e. in the nested build that LLMC_WASM starts).
#
# A WASI *reactor*: no main(); the host calls _initialize once, then the public API of
# llmc.h (every LLMC_API function: default visibility, everything else hidden) and malloc
# and free, with which the host places arguments in the module's linear memory.
#  - single-threaded: no OpenMP (the `#pragma omp` lines are ignored), one thread id 0;
#  - memory starts small and grows up to 4 GiB, the most a wasm32 module can address;
#  - SIMD128 (-msimd128): the GEMM micro-kernel of gemm_wasm.c; relaxed-SIMD fused
#    multiply-add (LLMC_WASM_RELAXED) only when the compiler emits its final-spec encoding
#    (clang 14 emits a pre-standard opcode that runtimes reject; see the probe below);
#  - _Thread_local (the per-thread error message) becomes a plain global: without the
#    atomics feature a module has one thread, and local-exec needs no TLS runtime.
set(LLMC_WASM_MAX_MEMORY 4294967296)

file(GLOB LLMC_SOURCES CONFIGURE_DEPENDS "${LLMC_SOURCE_DIR}/*.c")
add_executable(llmc_wasm ${LLMC_SOURCES})
set_target_properties(llmc_wasm PROPERTIES OUTPUT_NAME libllmc SUFFIX ".wasm"
                      C_VISIBILITY_PRESET hidden)
target_include_directories(llmc_wasm PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/include" "${LLMC_SOURCE_DIR}")
target_compile_options(llmc_wasm PRIVATE -O3 -fno-math-errno -ffp-contract=off -Wall -Wextra
                       # single-threaded: the thread-count arguments and `omp` pragmas go unused
                       -Wno-unused-parameter -Wno-unused-variable -Wno-unknown-pragmas
                       -msimd128 -ftls-model=local-exec)

# Relaxed SIMD: does this clang encode f32x4.relaxed_madd as the final spec does
# (0xfd 0x85 0x02, opcode 0x105)? clang 14 spells it __builtin_wasm_fma_f32x4 and encodes
# the prototype's 0xaf, which wasmtime refuses; clang >= 16 spells it relaxed_madd.
set(LLMC_WASM_RELAXED OFF)
if(NOT LLMC_WASM_RELAXED_SIMD STREQUAL "OFF")
  set(_probe_dir "${CMAKE_CURRENT_BINARY_DIR}/relaxed_probe")
  file(WRITE "${_probe_dir}/probe.c" "
#include <wasm_simd128.h>
v128_t llmc_probe(v128_t a, v128_t b, v128_t c) { return __builtin_wasm_relaxed_madd_f32x4(a, b, c); }
")
  execute_process(
    COMMAND "${CMAKE_C_COMPILER}" --target=wasm32-wasi "--sysroot=${CMAKE_SYSROOT}" -O2
            -msimd128 -mrelaxed-simd -c probe.c -o probe.o
    WORKING_DIRECTORY "${_probe_dir}" RESULT_VARIABLE _probe_rc OUTPUT_QUIET ERROR_QUIET)
  if(_probe_rc EQUAL 0)
    file(READ "${_probe_dir}/probe.o" _probe_hex HEX)
    if(_probe_hex MATCHES "fd8502")
      set(LLMC_WASM_RELAXED ON)
    endif()
  endif()
endif()
if(LLMC_WASM_RELAXED)
  target_compile_options(llmc_wasm PRIVATE -mrelaxed-simd)
  target_compile_definitions(llmc_wasm PRIVATE LLMC_WASM_RELAXED=1)
  message(STATUS "llmc: wasm core with relaxed-SIMD fused multiply-add (${CMAKE_C_COMPILER})")
else()
  message(STATUS "llmc: wasm core with SIMD128 (no final-spec relaxed SIMD in ${CMAKE_C_COMPILER})")
endif()

target_link_options(llmc_wasm PRIVATE
  -mexec-model=reactor
  "LINKER:--export-dynamic"      # every LLMC_API function
  "LINKER:--export=malloc" "LINKER:--export=free"
  "LINKER:--max-memory=${LLMC_WASM_MAX_MEMORY}"
  "LINKER:--strip-debug")
target_link_libraries(llmc_wasm PRIVATE m)

install(TARGETS llmc_wasm RUNTIME DESTINATION .)

# Test only, never installed: the kernel test shim (core_c/tests/shim/kernel_shim.c) as a wasm
# module, _kernel_shim.wasm, for the property tests of the kernels against the wasm build
# (parity_tests/test_wasm_core_kernels.py builds it on demand with -DLLMC_KERNEL_SHIM=ON).
if(LLMC_KERNEL_SHIM)
  add_executable(llmc_kernel_shim_wasm ${LLMC_SOURCES} "${CMAKE_CURRENT_SOURCE_DIR}/tests/shim/kernel_shim.c")
  set_target_properties(llmc_kernel_shim_wasm PROPERTIES OUTPUT_NAME _kernel_shim SUFFIX ".wasm"
                        C_VISIBILITY_PRESET hidden)
  foreach(_prop INCLUDE_DIRECTORIES COMPILE_OPTIONS COMPILE_DEFINITIONS LINK_OPTIONS LINK_LIBRARIES)
    get_target_property(_val llmc_wasm ${_prop})
    if(_val)
      set_target_properties(llmc_kernel_shim_wasm PROPERTIES ${_prop} "${_val}")
    endif()
  endforeach()
endif()

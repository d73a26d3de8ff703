# CMake toolchain file: build the C core as a WebAssembly module (wasm32-wasi).
#
#   cmake -S core_c -B build-wasm -DCMAKE_TOOLCHAIN_FILE=core_c/cmake/wasm32-wasi.cmake \
#         [-DLLMC_WASM_CLANG=/usr/bin/clang] [-DLLMC_WASI_SYSROOT=/usr]
#
# The native build (core_c/CMakeLists.txt, LLMC_WASM=AUTO|ON) runs this as a nested build
# when it finds a clang that targets wasm32-wasi; see wasm_module.cmake for what is built.
# Debian's clang + wasi-libc put the WASI sysroot at /usr (/usr/include/wasm32-wasi,
# /usr/lib/wasm32-wasi); the wasi-sdk puts it at <sdk>/share/wasi-sysroot.
set(CMAKE_SYSTEM_NAME WASI)
set(CMAKE_SYSTEM_VERSION 1)
set(CMAKE_SYSTEM_PROCESSOR wasm32)

if(NOT LLMC_WASM_CLANG)
  find_program(LLMC_WASM_CLANG NAMES clang-16 clang-15 clang clang-14 REQUIRED)
endif()
if(NOT LLMC_WASI_SYSROOT)
  set(LLMC_WASI_SYSROOT "/usr")
endif()
set(CMAKE_C_COMPILER "${LLMC_WASM_CLANG}")
set(CMAKE_C_COMPILER_TARGET wasm32-wasi)
set(CMAKE_SYSROOT "${LLMC_WASI_SYSROOT}")
# the compiler check links a program: a plain command module is fine for that
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(CMAKE_EXECUTABLE_SUFFIX ".wasm")
# the sysroot's libraries and headers only, never the host's
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)

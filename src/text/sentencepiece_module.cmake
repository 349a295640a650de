# libsalad_spm.so: the SentencePiece wrapper module (text/spm_module.cpp). It is the only thing
# that links libsentencepiece, whose bundled protobuf-lite must never enter a process's global
# symbol scope next to LibTorch's libprotobuf (a segfault in protobuf's static initialisers).
# libsalad dlopen()s it with RTLD_LOCAL | RTLD_DEEPBIND from its own folder (or $SALAD_SPM_MODULE),
# so it is built into the same folder as libsalad and installed next to it.

# Debian's sentencepiece.pc lists -lsentencepiece_train today; link it explicitly all the same,
# since the trainer entry points live only there.
find_library(SALAD_SENTENCEPIECE_TRAIN_LIBRARY sentencepiece_train
             HINTS ${SENTENCEPIECE_LIBRARY_DIRS})
salad_require(SALAD_SENTENCEPIECE_TRAIN_LIBRARY "SentencePiece's trainer (libsentencepiece_train)"
              libsentencepiece-dev)

add_library(salad_spm MODULE ${CMAKE_CURRENT_LIST_DIR}/spm_module.cpp)
target_include_directories(salad_spm PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(salad_spm PRIVATE PkgConfig::SENTENCEPIECE
                                        ${SALAD_SENTENCEPIECE_TRAIN_LIBRARY} Threads::Threads)
# Export only the extern "C" entry points (a version script also hides the std:: template
# instances that hidden visibility leaves global); fail at link time, not at dlopen time, on a
# missing symbol.
set(SALAD_SPM_VERSION_SCRIPT "${CMAKE_CURRENT_BINARY_DIR}/salad_spm.map")
file(WRITE "${SALAD_SPM_VERSION_SCRIPT}" "{\n  global: salad_spm_*;\n  local: *;\n};\n")
target_link_options(salad_spm PRIVATE "LINKER:--version-script=${SALAD_SPM_VERSION_SCRIPT}"
                                      "LINKER:--no-undefined" "LINKER:--as-needed")
set_property(TARGET salad_spm APPEND PROPERTY LINK_DEPENDS "${SALAD_SPM_VERSION_SCRIPT}")
set_target_properties(salad_spm PROPERTIES
  OUTPUT_NAME salad_spm
  PREFIX "lib"
  CXX_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON
  LIBRARY_OUTPUT_DIRECTORY "$<TARGET_FILE_DIR:salad>")

# Built whenever libsalad is, so a fresh libsalad never runs without its module.
add_dependencies(salad salad_spm)

install(TARGETS salad_spm LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})

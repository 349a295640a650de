# install() rules and the exported CMake package: an outside project does
#   find_package(salad REQUIRED)
#   target_link_libraries(app PRIVATE salad::salad)
include(CMakePackageConfigHelpers)

set(SALAD_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/salad")

install(TARGETS salad EXPORT saladTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/salad DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT saladTargets NAMESPACE salad:: DESTINATION ${SALAD_CMAKE_DIR})

configure_package_config_file(cmake/saladConfig.cmake.in
                              "${CMAKE_CURRENT_BINARY_DIR}/saladConfig.cmake"
                              INSTALL_DESTINATION ${SALAD_CMAKE_DIR})
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/saladConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/saladConfig.cmake"
              "${CMAKE_CURRENT_BINARY_DIR}/saladConfigVersion.cmake"
        DESTINATION ${SALAD_CMAKE_DIR})

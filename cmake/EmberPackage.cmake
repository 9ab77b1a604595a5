# What `cmake --install` adds besides the library, headers and CLI (engine/ and tools/
# CMakeLists.txt): a CMake package (find_package(ember) -> ember::ember) and a pkg-config
# file (pkg-config --cflags --libs ember), both relocatable: they find the prefix from
# their own location, so `cmake --install build --prefix DIR` works for any DIR.
include(CMakePackageConfigHelpers)

set(ember_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/ember)
install(EXPORT emberTargets NAMESPACE ember:: DESTINATION ${ember_cmake_dir})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/emberConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/emberConfig.cmake INSTALL_DESTINATION ${ember_cmake_dir})
# 0.x: minor versions may break the API (as the soname says).
write_basic_package_version_file(${PROJECT_BINARY_DIR}/emberConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/emberConfig.cmake ${PROJECT_BINARY_DIR}/emberConfigVersion.cmake
        DESTINATION ${ember_cmake_dir})

# ember.pc: prefix relative to the file itself (${pcfiledir}), unless the directories are absolute.
if(IS_ABSOLUTE ${CMAKE_INSTALL_LIBDIR} OR IS_ABSOLUTE ${CMAKE_INSTALL_INCLUDEDIR})
  set(ember_pc_prefix ${CMAKE_INSTALL_PREFIX})
  set(ember_pc_libdir ${CMAKE_INSTALL_FULL_LIBDIR})
  set(ember_pc_includedir ${CMAKE_INSTALL_FULL_INCLUDEDIR})
else()
  file(RELATIVE_PATH ember_pc_up /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
  string(REGEX REPLACE "/$" "" ember_pc_up ${ember_pc_up})
  set(ember_pc_prefix "\${pcfiledir}/${ember_pc_up}")
  set(ember_pc_libdir "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(ember_pc_includedir "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
# ONNX support (EMBER_ONNX): what a static libember links besides.
set(ember_pc_onnx_libs "")
if(EMBER_WITH_ONNX)
  set(ember_pc_onnx_libs " -lonnx -lonnx_proto -lprotobuf")
endif()
# A static libember built with MPI (EMBER_MPI) links Open MPI's C library too (a shared
# one carries it as its own dependency: pkg-config users need no MPI files).
set(ember_pc_requires_private "zlib libpng libjpeg")
if(EMBER_MPI AND NOT BUILD_SHARED_LIBS)
  string(APPEND ember_pc_requires_private " ompi-c")
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/ember.pc.in ${PROJECT_BINARY_DIR}/ember.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/ember.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# Helpers for tests. Multi-rank tests run under mpiexec, oversubscribed on small machines, as root
# inside containers, over shared memory only.
set(GEMMAPOD_MPI_TEST_ENV
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1
    OMP_NUM_THREADS=1)

# gemmapod_test(NAME SOURCES... LIBS...): a GoogleTest binary, one ctest entry per test case.
function(gemmapod_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest_main GTest::gmock)
  gtest_discover_tests(${name} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                       PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" TIMEOUT 120)
endfunction()

# gemmapod_mpi_test(NAME RANKS n... SOURCES... LIBS...): a GoogleTest binary run as one ctest
# entry per rank count, under `mpiexec -n <n>`. Its main (tests/mpi_test_main.cc) initialises MPI
# and makes every rank agree on the exit code, so the job fails when any rank fails.
function(gemmapod_mpi_test name)
  cmake_parse_arguments(ARG "" "" "RANKS;SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES} ${PROJECT_SOURCE_DIR}/tests/mpi_test_main.cc)
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gmock MPI::MPI_CXX)
  foreach(ranks ${ARG_RANKS})
    add_test(NAME ${name}_np${ranks}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${ranks} ${MPIEXEC_PREFLAGS}
                     $<TARGET_FILE:${name}> ${MPIEXEC_POSTFLAGS}
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(${name}_np${ranks} PROPERTIES ENVIRONMENT "${GEMMAPOD_MPI_TEST_ENV}"
                                                       PROCESSORS 2 TIMEOUT 180)
  endforeach()
endfunction()

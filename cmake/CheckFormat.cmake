# Fails when any C++/CUDA source under the repository would be changed by clang-format.
file(GLOB_RECURSE sources RELATIVE ${ROOT}
     ${ROOT}/runtime/*.h ${ROOT}/runtime/*.cc ${ROOT}/runtime/*.cu
     ${ROOT}/sharding/*.h ${ROOT}/sharding/*.cc ${ROOT}/launch/*.h ${ROOT}/launch/*.cc
     ${ROOT}/models/*.h ${ROOT}/models/*.cc ${ROOT}/training/*.h ${ROOT}/training/*.cc
     ${ROOT}/serving/*.h ${ROOT}/serving/*.cc ${ROOT}/tests/*.h ${ROOT}/tests/*.cc
     ${ROOT}/bench/*.h ${ROOT}/bench/*.cc ${ROOT}/tools/*.h ${ROOT}/tools/*.cc)
set(bad "")
foreach(f ${sources})
  execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror ${f} WORKING_DIRECTORY ${ROOT}
                  RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
  if(NOT rc EQUAL 0)
    list(APPEND bad ${f})
  endif()
endforeach()
if(bad)
  message(FATAL_ERROR "not clang-formatted (run clang-format -i on them): ${bad}")
endif()
list(LENGTH sources n)
message(STATUS "${n} files formatted")

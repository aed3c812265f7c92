# Fails when an ISA object file defines a weak or vague-linkage symbol (an inline function or
# template instantiated under -mavx2 / -mavx512f): the linker could pick that copy for code
# that runs on CPUs without the extension, and the process would die of SIGILL.
# Usage: cmake -DNM=<nm> -DOBJECTS=<a.o;b.o> -P check_isa_symbols.cmake
foreach(object IN LISTS OBJECTS)
  execute_process(COMMAND ${NM} -C ${object} OUTPUT_VARIABLE symbols RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nm failed on ${object}")
  endif()
  string(REGEX MATCHALL "[^\n]* [WVu] [^\n]*" weak "${symbols}")
  if(weak)
    message(FATAL_ERROR "${object} defines weak symbols:\n${weak}")
  endif()
  message(STATUS "${object}: no weak symbols")
endforeach()

# cmake -DINPUT=viewer.js -DOUTPUT=viewer_bundle.cc -P embed_bundle.cmake
# Writes the bundle as a byte array (no string-literal length limits, any byte allowed).
file(READ "${INPUT}" text)
string(FIND "${text}" "</script" closing)
if(NOT closing EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains '</script' at byte ${closing}: it would end the page's script")
endif()
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${INPUT} by embed_bundle.cmake; do not edit.\n"
  "#include \"client/viewer/viewer_bundle.h\"\n"
  "namespace attnscope {\n"
  "const char kViewerBundle[] = {${bytes} 0};\n"
  "const size_t kViewerBundleSize = ${size};\n"
  "}  // namespace attnscope\n")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")

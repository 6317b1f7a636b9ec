// The viewer bundle (client/viewer/src bundled by esbuild at build time), embedded into the
// binary so `attnscope view` writes pages that need nothing else.
#pragma once

#include <cstddef>

namespace attnscope {

extern const char kViewerBundle[];
extern const size_t kViewerBundleSize;

}  // namespace attnscope

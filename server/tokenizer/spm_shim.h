// C interface of the SentencePiece shim library (attnscope_spm_shim). The tokenizer opens the
// shim with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): Debian's libsentencepiece carries its own
// protobuf-lite and must not share symbols with the protobuf that gRPC and libtorch load.
// Buffers the shim returns are released with attnscope_spm_free_buffer.
#pragma once

#include <stddef.h>
#include <stdint.h>

extern "C" {

enum AttnscopeSpmPieceFlags {
  kAttnscopeSpmControl = 1,
  kAttnscopeSpmUnknown = 2,
  kAttnscopeSpmByte = 4,
  kAttnscopeSpmUnused = 8,
};

typedef void* (*AttnscopeSpmLoadFn)(const char* path, char* error, size_t error_size);
typedef void (*AttnscopeSpmFreeFn)(void* model);
typedef int (*AttnscopeSpmPieceSizeFn)(void* model);
typedef const char* (*AttnscopeSpmIdToPieceFn)(void* model, int id, size_t* length);
typedef int (*AttnscopeSpmPieceToIdFn)(void* model, const char* piece, size_t length);
typedef int (*AttnscopeSpmFlagsFn)(void* model, int id);
// Fills *ids, *begins, *ends (byte offsets into text) with *count entries; 0 on success.
typedef int (*AttnscopeSpmEncodeFn)(void* model, const char* text, size_t length, int** ids,
                                    uint32_t** begins, uint32_t** ends, size_t* count, char* error,
                                    size_t error_size);
typedef int (*AttnscopeSpmDecodeFn)(void* model, const int* ids, size_t count, char** text,
                                    size_t* length);
typedef void (*AttnscopeSpmFreeBufferFn)(void* buffer);

}  // extern "C"

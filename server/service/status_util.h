// The one place that maps absl::Status to grpc::Status (the codes share their numbering), and
// the one that turns an exception into INTERNAL (CatchAll).
#pragma once

#include <grpcpp/support/status.h>
#include <spdlog/spdlog.h>

#include <exception>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace attnscope::service {

// The same code and human message; a refusal naming a request field (server/status/
// field_error.h) also carries a serialized google.rpc.Status whose details hold one
// google.rpc.BadRequest with that field's path and the message as its description (gRPC sends
// it as the `grpc-status-details-bin` trailer).
grpc::Status ToGrpcStatus(const absl::Status& status);

// Runs `body`; an exception (std::bad_alloc under a memory limit, a library that throws)
// becomes INTERNAL naming `what` and the exception, with a log line, instead of escaping into
// gRPC (which answers UNIMPLEMENTED and never finishes the call, so its admission is never
// released) or out of a worker thread (which terminates the server).
template <typename Body>
grpc::Status CatchAll(const std::string& what, Body&& body) {
  std::string message;
  try {
    body();
    return grpc::Status::OK;
  } catch (const std::exception& error) {
    message = error.what();
  } catch (...) {
    message = "an exception of unknown type";
  }
  spdlog::error("{}: unexpected exception: {}", what, absl::CEscape(message));
  return grpc::Status(grpc::StatusCode::INTERNAL,
                      absl::StrCat(what, ": internal error: ", message));
}

}  // namespace attnscope::service

#define ATTNSCOPE_RETURN_IF_ERROR(expr)  \
  do {                                   \
    const absl::Status status_ = (expr); \
    if (!status_.ok()) return status_;   \
  } while (0)

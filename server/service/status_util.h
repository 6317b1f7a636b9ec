// The one place that maps absl::Status to grpc::Status (the codes share their numbering).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace attnscope::service {

// The same code and human message; a refusal naming a request field (server/status/
// field_error.h) also carries a serialized google.rpc.Status whose details hold one
// google.rpc.BadRequest with that field's path and the message as its description (gRPC sends
// it as the `grpc-status-details-bin` trailer).
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace attnscope::service

#define ATTNSCOPE_RETURN_IF_ERROR(expr)  \
  do {                                   \
    const absl::Status status_ = (expr); \
    if (!status_.ok()) return status_;   \
  } while (0)

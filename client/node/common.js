// What capture.js and score.js share: the .proto loaded at run time, its enum constants and
// field names, the flag walker, and the server's refusals with the request fields they name.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
// The library under @grpc/proto-loader, for the google.rpc messages of the status details.
const protobuf = require('protobufjs');

const PROTO_ROOT = process.env.ATTNSCOPE_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');

let packageDefinition = null;
function loadDefinition() {
  if (packageDefinition === null) {
    packageDefinition = protoLoader.loadSync('attnscope/v1/attnscope.proto', {
      includeDirs: [PROTO_ROOT],
      keepCase: true,
      longs: Number,
      enums: Number,
      defaults: true,
      oneofs: true,
    });
  }
  return packageDefinition;
}

function loadService() {
  return grpc.loadPackageDefinition(loadDefinition()).attnscope.v1.AttnScope;
}

function messageType(name) {
  const definition = loadDefinition()[`attnscope.v1.${name}`];
  if (!definition) throw new Error(`attnscope.v1.${name} is not in the .proto`);
  return definition.type;
}

// The .proto's enum constants by name (enumValues('DType').DTYPE_FLOAT16 === 2): no number in
// the clients is typed by hand.
function enumValues(name) {
  const values = {};
  for (const value of messageType(name).value) values[value.name] = value.number;
  return values;
}

// proto-loader drops unknown fields without a word (a misspelled field is simply not sent),
// so every request is checked against the .proto first: throws naming the first field of
// `object` that message `typeName` does not have, at any depth.
function checkFields(typeName, object, where = typeName) {
  const fields = messageType(typeName).field;
  for (const [key, value] of Object.entries(object)) {
    const field = fields.find((f) => f.name === key);
    if (!field) throw new Error(`${where}.${key}: attnscope.v1.${typeName} has no field ${key}`);
    if (field.type !== 'TYPE_MESSAGE' || value === null || value === undefined) continue;
    const items = field.label === 'LABEL_REPEATED' ? value : [value];
    for (const item of items) checkFields(field.typeName, item, `${where}.${key}`);
  }
  return object;
}

// "1,2,,3" -> [1, 2, 3].
function numberList(text) {
  return text.split(',').filter((s) => s.trim() !== '').map(Number);
}

// Calls onFlag(flag, value) for each flag of `argv`, where value() consumes the flag's
// argument; onFlag returns false for a flag it does not know.
function walkFlags(argv, onFlag) {
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    if (!onFlag(flag, value)) throw new Error(`unknown flag ${flag}`);
  }
}

// google.rpc.Status and google.rpc.BadRequest from proto/google/rpc/ (the server's copies;
// google/protobuf/any.proto is bundled with protobufjs).
let rpcTypes = null;
function loadRpcTypes() {
  if (rpcTypes === null) {
    const root = new protobuf.Root();
    root.resolvePath = (origin, target) =>
      target.startsWith('google/protobuf/') ? target : path.join(PROTO_ROOT, target);
    root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], {keepCase: true});
    rpcTypes = {status: root.lookupType('google.rpc.Status'), badRequest: root.lookupType('google.rpc.BadRequest')};
  }
  return rpcTypes;
}

// The field violations of a gRPC error's google.rpc.BadRequest details (the
// grpc-status-details-bin trailer): [{field, description}], [] when it carries none.
function fieldViolations(error) {
  const details = error && error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  const violations = [];
  for (const bytes of details) {
    const {status, badRequest} = loadRpcTypes();
    for (const any of status.decode(bytes).details) {
      if (!any.type_url.endsWith('/google.rpc.BadRequest')) continue;
      for (const violation of badRequest.decode(any.value).field_violations) {
        violations.push({field: violation.field, description: violation.description});
      }
    }
  }
  return violations;
}

// A gRPC error with its code's name (INVALID_ARGUMENT) and `fieldViolations`.
function refusal(error) {
  return Object.assign(error, {code: grpc.status[error.code] || error.code, fieldViolations: fieldViolations(error)});
}

// The command line's error line: "capture.js: INVALID_ARGUMENT <message> [field: capture.layers]".
function errorLine(script, error) {
  const fields = (error.fieldViolations || []).map((v) => v.field);
  return `${script}: ${error.code || ''} ${error.details || error.message}` +
      (fields.length > 0 ? ` [field: ${fields.join(', ')}]` : '');
}

module.exports = {PROTO_ROOT, loadService, messageType, enumValues, checkFields, numberList, walkFlags,
  fieldViolations, refusal, errorLine};

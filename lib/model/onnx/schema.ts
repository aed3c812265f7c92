/**
 * The part of the ONNX protobuf schema (onnx.proto, IR version 8) that ebrix writes and reads,
 * as a protobufjs reflection descriptor, plus a decoder that turns model bytes into a plain,
 * typed view.
 *
 * Field names, numbers, types and `packed` options follow onnx.proto exactly; only the wire
 * numbers and types matter to a reader, but keeping the spec's names makes the descriptor easy
 * to check against it. Messages and fields ebrix never writes (sparse tensors, training info,
 * functions, sequence/map types, ...) are left out: a decoder skips unknown fields, so models
 * that use them still decode, just without those parts.
 *
 * onnx.proto is proto2, so repeated scalars are unpacked unless the spec asks for packing
 * (it does for the TensorProto data arrays only). Parsers accept either, but writing what the
 * spec says keeps our bytes identical in layout to those from the reference tools.
 */
import protobuf from 'protobufjs';

import { CorruptModelError } from '../../errors.js';

/**
 * IR version 8 is what the ONNX 1.13 release (the one that introduced opset 18) writes; a
 * runtime accepts any IR version up to its own, so the oldest one that knows opset 18 keeps
 * the models loadable by the widest range of onnxruntime builds.
 */
export const IR_VERSION = 8;

/**
 * Opset 18: LayerNormalization exists (since 17) and every Reduce* op takes `axes` as an
 * input rather than an attribute (ReduceSum since 13, the rest since 18), so one calling
 * convention covers all reductions.
 */
export const OPSET_VERSION = 18;

/** TensorProto.DataType. */
export const DataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  COMPLEX64: 14,
  COMPLEX128: 15,
  BFLOAT16: 16,
} as const;
export type DataType = (typeof DataType)[keyof typeof DataType];

/** AttributeProto.AttributeType. */
export const AttributeType = {
  UNDEFINED: 0,
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
  TENSORS: 9,
  GRAPHS: 10,
  SPARSE_TENSOR: 11,
  SPARSE_TENSORS: 12,
  TYPE_PROTO: 13,
  TYPE_PROTOS: 14,
} as const;
export type AttributeType = (typeof AttributeType)[keyof typeof AttributeType];

/** TensorProto.DataLocation. */
const DataLocation = { DEFAULT: 0, EXTERNAL: 1 } as const;

const enumValues = (values: Record<string, number>): protobuf.IEnum => ({ values });

// protobufjs reads a JSON-described type as proto3 unless told otherwise, which would pack
// every repeated scalar and drop fields holding their default value (an attribute `i: 0`).
const message = (type: protobuf.IType): protobuf.IType => ({ edition: 'proto2', ...type });

const descriptor: protobuf.INamespace = {
  nested: {
    onnx: {
      nested: {
        AttributeProto: message({
          fields: {
            name: { type: 'string', id: 1 },
            ref_attr_name: { type: 'string', id: 21 },
            doc_string: { type: 'string', id: 13 },
            type: { type: 'AttributeType', id: 20 },
            f: { type: 'float', id: 2 },
            i: { type: 'int64', id: 3 },
            s: { type: 'bytes', id: 4 },
            t: { type: 'TensorProto', id: 5 },
            g: { type: 'GraphProto', id: 6 },
            tp: { type: 'TypeProto', id: 14 },
            floats: { rule: 'repeated', type: 'float', id: 7 },
            ints: { rule: 'repeated', type: 'int64', id: 8 },
            strings: { rule: 'repeated', type: 'bytes', id: 9 },
            tensors: { rule: 'repeated', type: 'TensorProto', id: 10 },
            graphs: { rule: 'repeated', type: 'GraphProto', id: 11 },
            type_protos: { rule: 'repeated', type: 'TypeProto', id: 15 },
          },
          nested: { AttributeType: enumValues(AttributeType) },
        }),
        ValueInfoProto: message({
          fields: {
            name: { type: 'string', id: 1 },
            type: { type: 'TypeProto', id: 2 },
            doc_string: { type: 'string', id: 3 },
          },
        }),
        NodeProto: message({
          fields: {
            input: { rule: 'repeated', type: 'string', id: 1 },
            output: { rule: 'repeated', type: 'string', id: 2 },
            name: { type: 'string', id: 3 },
            op_type: { type: 'string', id: 4 },
            domain: { type: 'string', id: 7 },
            attribute: { rule: 'repeated', type: 'AttributeProto', id: 5 },
            doc_string: { type: 'string', id: 6 },
          },
        }),
        ModelProto: message({
          fields: {
            ir_version: { type: 'int64', id: 1 },
            opset_import: { rule: 'repeated', type: 'OperatorSetIdProto', id: 8 },
            producer_name: { type: 'string', id: 2 },
            producer_version: { type: 'string', id: 3 },
            domain: { type: 'string', id: 4 },
            model_version: { type: 'int64', id: 5 },
            doc_string: { type: 'string', id: 6 },
            graph: { type: 'GraphProto', id: 7 },
            metadata_props: { rule: 'repeated', type: 'StringStringEntryProto', id: 14 },
          },
        }),
        StringStringEntryProto: message({
          fields: {
            key: { type: 'string', id: 1 },
            value: { type: 'string', id: 2 },
          },
        }),
        GraphProto: message({
          fields: {
            node: { rule: 'repeated', type: 'NodeProto', id: 1 },
            name: { type: 'string', id: 2 },
            initializer: { rule: 'repeated', type: 'TensorProto', id: 5 },
            doc_string: { type: 'string', id: 10 },
            input: { rule: 'repeated', type: 'ValueInfoProto', id: 11 },
            output: { rule: 'repeated', type: 'ValueInfoProto', id: 12 },
            value_info: { rule: 'repeated', type: 'ValueInfoProto', id: 13 },
          },
        }),
        TensorProto: message({
          fields: {
            dims: { rule: 'repeated', type: 'int64', id: 1 },
            data_type: { type: 'int32', id: 2 },
            float_data: { rule: 'repeated', type: 'float', id: 4, options: { packed: true } },
            int32_data: { rule: 'repeated', type: 'int32', id: 5, options: { packed: true } },
            string_data: { rule: 'repeated', type: 'bytes', id: 6 },
            int64_data: { rule: 'repeated', type: 'int64', id: 7, options: { packed: true } },
            name: { type: 'string', id: 8 },
            doc_string: { type: 'string', id: 12 },
            raw_data: { type: 'bytes', id: 9 },
            external_data: { rule: 'repeated', type: 'StringStringEntryProto', id: 13 },
            data_location: { type: 'DataLocation', id: 14 },
            double_data: { rule: 'repeated', type: 'double', id: 10, options: { packed: true } },
            uint64_data: { rule: 'repeated', type: 'uint64', id: 11, options: { packed: true } },
          },
          nested: { DataType: enumValues(DataType), DataLocation: enumValues(DataLocation) },
        }),
        TensorShapeProto: message({
          fields: {
            dim: { rule: 'repeated', type: 'Dimension', id: 1 },
          },
          nested: {
            Dimension: message({
              oneofs: { value: { oneof: ['dim_value', 'dim_param'] } },
              fields: {
                dim_value: { type: 'int64', id: 1 },
                dim_param: { type: 'string', id: 2 },
                denotation: { type: 'string', id: 3 },
              },
            }),
          },
        }),
        TypeProto: message({
          // Only the tensor member of the `value` oneof: ebrix towers take and give tensors.
          oneofs: { value: { oneof: ['tensor_type'] } },
          fields: {
            tensor_type: { type: 'Tensor', id: 1 },
            denotation: { type: 'string', id: 6 },
          },
          nested: {
            Tensor: message({
              fields: {
                elem_type: { type: 'int32', id: 1 },
                shape: { type: 'TensorShapeProto', id: 2 },
              },
            }),
          },
        }),
        OperatorSetIdProto: message({
          fields: {
            domain: { type: 'string', id: 1 },
            version: { type: 'int64', id: 2 },
          },
        }),
      },
    },
  },
};

const root = protobuf.Root.fromJSON(descriptor);
const ModelProtoType = root.lookupType('onnx.ModelProto');

// Plain-object shapes of the messages, in the spec's field names. The writer builds these and
// protobufjs encodes them directly (it reads plain objects; no Message instances needed).

export interface StringStringEntryProto {
  key: string;
  value: string;
}

export interface OperatorSetIdProto {
  domain: string;
  version: number;
}

export interface DimensionProto {
  dim_value?: number;
  dim_param?: string;
}

export interface TypeProto {
  tensor_type?: { elem_type: number; shape?: { dim: DimensionProto[] } };
}

export interface ValueInfoProto {
  name: string;
  type?: TypeProto;
  doc_string?: string;
}

export interface TensorProto {
  name: string;
  data_type: number;
  dims: number[];
  raw_data?: Uint8Array;
}

export interface AttributeProto {
  name: string;
  type: AttributeType;
  f?: number;
  i?: number;
  s?: Uint8Array;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
}

export interface NodeProto {
  input: string[];
  output: string[];
  name?: string;
  op_type: string;
  domain?: string;
  attribute?: AttributeProto[];
  doc_string?: string;
}

export interface GraphProto {
  name: string;
  node: NodeProto[];
  initializer: TensorProto[];
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  doc_string?: string;
}

export interface ModelProto {
  ir_version: number;
  opset_import: OperatorSetIdProto[];
  producer_name?: string;
  producer_version?: string;
  domain?: string;
  model_version?: number;
  doc_string?: string;
  graph: GraphProto;
  metadata_props?: StringStringEntryProto[];
}

/** Serialises a ModelProto. */
export function encodeModel(model: ModelProto): Uint8Array {
  return ModelProtoType.encode(model as unknown as { [k: string]: unknown }).finish();
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** A graph input or output as declared: element type and shape (a string is a symbolic dim). */
export interface DecodedValue {
  name: string;
  /** e.g. 'float32', 'int32', 'int64'; `dataType <n>` for types without a short name. */
  elementType: string;
  /** Per axis: a size, a symbolic name, or null when neither is given; null when the rank is unknown. */
  dims: Array<number | string | null> | null;
}

export type DecodedAttribute = number | string | number[] | string[] | { unsupported: AttributeType };

export interface DecodedNode {
  name: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: Record<string, DecodedAttribute>;
}

export interface DecodedModel {
  irVersion: number;
  opsetImports: Array<{ domain: string; version: number }>;
  producerName: string;
  producerVersion: string;
  docString: string;
  metadata: Record<string, string>;
  graphName: string;
  /** Inputs a caller feeds: graph inputs that are not also initializers (IR ≥ 4 allows both). */
  inputs: DecodedValue[];
  outputs: DecodedValue[];
  initializers: Array<{ name: string; elementType: string; dims: number[] }>;
  nodes: DecodedNode[];
}

const SHORT_NAMES: Partial<Record<number, string>> = {
  [DataType.FLOAT]: 'float32',
  [DataType.UINT8]: 'uint8',
  [DataType.INT8]: 'int8',
  [DataType.UINT16]: 'uint16',
  [DataType.INT16]: 'int16',
  [DataType.INT32]: 'int32',
  [DataType.INT64]: 'int64',
  [DataType.STRING]: 'string',
  [DataType.BOOL]: 'bool',
  [DataType.FLOAT16]: 'float16',
  [DataType.DOUBLE]: 'float64',
  [DataType.UINT32]: 'uint32',
  [DataType.UINT64]: 'uint64',
  [DataType.BFLOAT16]: 'bfloat16',
};

export function elementTypeName(dataType: number): string {
  return SHORT_NAMES[dataType] ?? `dataType ${dataType}`;
}

// What protobufjs's toObject gives back with { longs: Number, enums: Number, arrays: true }:
// every field optional (proto2 presence), repeated fields always arrays.
interface RawDimension {
  dim_value?: number;
  dim_param?: string;
}
interface RawValueInfo {
  name?: string;
  type?: { tensor_type?: { elem_type?: number; shape?: { dim: RawDimension[] } } };
}
interface RawAttribute {
  name?: string;
  type?: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  floats: number[];
  ints: number[];
  strings: Uint8Array[];
}
interface RawModel {
  ir_version?: number;
  opset_import: Array<{ domain?: string; version?: number }>;
  producer_name?: string;
  producer_version?: string;
  doc_string?: string;
  metadata_props: Array<{ key?: string; value?: string }>;
  graph?: {
    name?: string;
    node: Array<{
      name?: string;
      op_type?: string;
      domain?: string;
      input: string[];
      output: string[];
      attribute: RawAttribute[];
    }>;
    initializer: Array<{ name?: string; data_type?: number; dims: number[] }>;
    input: RawValueInfo[];
    output: RawValueInfo[];
  };
}

const utf8 = new TextDecoder();

function decodeValue(value: RawValueInfo): DecodedValue {
  const tensor = value.type?.tensor_type;
  return {
    name: value.name ?? '',
    elementType: tensor ? elementTypeName(tensor.elem_type ?? DataType.UNDEFINED) : 'unknown',
    dims: tensor?.shape ? tensor.shape.dim.map((d) => d.dim_value ?? d.dim_param ?? null) : null,
  };
}

function decodeAttribute(attribute: RawAttribute): DecodedAttribute {
  const type = (attribute.type ?? AttributeType.UNDEFINED) as AttributeType;
  switch (type) {
    case AttributeType.FLOAT:
      return attribute.f ?? 0;
    case AttributeType.INT:
      return attribute.i ?? 0;
    case AttributeType.STRING:
      return utf8.decode(attribute.s ?? new Uint8Array());
    case AttributeType.FLOATS:
      return attribute.floats;
    case AttributeType.INTS:
      return attribute.ints;
    case AttributeType.STRINGS:
      return attribute.strings.map((s) => utf8.decode(s));
    default:
      return { unsupported: type };
  }
}

/**
 * Decodes ONNX model bytes into a plain view of what a caller needs to drive the model: its
 * declared inputs and outputs, metadata, and (for inspection and tests) its nodes and
 * initializer shapes. Tensor contents are not returned. Bytes that are not a ModelProto with
 * a graph give EBRIX_CORRUPT_MODEL.
 */
export function decodeModel(bytes: Uint8Array): DecodedModel {
  let raw: RawModel;
  try {
    const message = ModelProtoType.decode(bytes);
    raw = ModelProtoType.toObject(message, { longs: Number, enums: Number, arrays: true }) as RawModel;
  } catch (error) {
    throw new CorruptModelError(`Not an ONNX model: ${(error as Error).message}`);
  }
  const graph = raw.graph;
  if (!graph) throw new CorruptModelError('Not an ONNX model: the ModelProto has no graph');
  const initializerNames = new Set(graph.initializer.map((t) => t.name ?? ''));
  const metadata: Record<string, string> = {};
  for (const entry of raw.metadata_props) metadata[entry.key ?? ''] = entry.value ?? '';
  return {
    irVersion: raw.ir_version ?? 0,
    opsetImports: raw.opset_import.map((o) => ({ domain: o.domain ?? '', version: o.version ?? 0 })),
    producerName: raw.producer_name ?? '',
    producerVersion: raw.producer_version ?? '',
    docString: raw.doc_string ?? '',
    metadata,
    graphName: graph.name ?? '',
    inputs: graph.input.filter((v) => !initializerNames.has(v.name ?? '')).map(decodeValue),
    outputs: graph.output.map(decodeValue),
    initializers: graph.initializer.map((t) => ({
      name: t.name ?? '',
      elementType: elementTypeName(t.data_type ?? DataType.UNDEFINED),
      dims: t.dims,
    })),
    nodes: graph.node.map((n) => ({
      name: n.name ?? '',
      opType: n.op_type ?? '',
      domain: n.domain ?? '',
      inputs: n.input,
      outputs: n.output,
      attributes: Object.fromEntries(n.attribute.map((a) => [a.name ?? '', decodeAttribute(a)])),
    })),
  };
}

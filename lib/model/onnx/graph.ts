/**
 * GraphBuilder: assembles an ONNX graph (inputs, initializers, nodes, outputs) and serialises
 * it as a ModelProto. It checks as it goes what onnxruntime would otherwise reject later with a
 * less helpful message: names are unique, every node input already exists (so nodes are in
 * topological order by construction), tensor data matches its dims, and every declared output
 * is produced.
 */
import { InvalidSpecError } from '../../errors.js';
import {
  AttributeType,
  DataType,
  IR_VERSION,
  OPSET_VERSION,
  encodeModel,
  type AttributeProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from './schema.js';

export type ElementType = 'float32' | 'int32' | 'int64';

const DATA_TYPES: Record<ElementType, DataType> = {
  float32: DataType.FLOAT,
  int32: DataType.INT32,
  int64: DataType.INT64,
};

/** Typed attribute values: ONNX distinguishes INT from FLOAT, which a JS number cannot. */
export type Attribute =
  | { type: 'int'; value: number }
  | { type: 'float'; value: number }
  | { type: 'string'; value: string }
  | { type: 'ints'; value: readonly number[] }
  | { type: 'floats'; value: readonly number[] };

export const attr = {
  int: (value: number): Attribute => ({ type: 'int', value }),
  float: (value: number): Attribute => ({ type: 'float', value }),
  string: (value: string): Attribute => ({ type: 'string', value }),
  ints: (value: readonly number[]): Attribute => ({ type: 'ints', value }),
  floats: (value: readonly number[]): Attribute => ({ type: 'floats', value }),
};

export interface ModelInfo {
  producerName: string;
  producerVersion: string;
  docString?: string;
  /** Stored as ModelProto.metadata_props, in key order as given. */
  metadata?: Record<string, string>;
}

/** Protobuf messages cannot exceed 2 GiB; larger models would need ONNX external data. */
const MAX_MODEL_BYTES = 2 ** 31 - 1;

const utf8 = new TextEncoder();

// Checked once: on a little-endian host a typed array's bytes already are ONNX's raw_data
// layout and can be copied wholesale, which matters for embedding tables of millions of rows.
const littleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function rawLittleEndian(data: Float32Array | Int32Array | BigInt64Array): Uint8Array {
  const bytes = new Uint8Array(data.byteLength);
  if (littleEndianHost) {
    bytes.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return bytes;
  }
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < data.length; i++) {
    if (data instanceof Float32Array) view.setFloat32(i * 4, data[i]!, true);
    else if (data instanceof Int32Array) view.setInt32(i * 4, data[i]!, true);
    else view.setBigInt64(i * 8, data[i]!, true);
  }
  return bytes;
}

function elementTypeOf(data: Float32Array | Int32Array | BigInt64Array): ElementType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Int32Array) return 'int32';
  return 'int64';
}

function encodeAttribute(name: string, attribute: Attribute): AttributeProto {
  switch (attribute.type) {
    case 'int':
      if (!Number.isSafeInteger(attribute.value)) throw new InvalidSpecError(`Attribute '${name}' must be an integer but is ${attribute.value}`);
      return { name, type: AttributeType.INT, i: attribute.value };
    case 'float':
      return { name, type: AttributeType.FLOAT, f: attribute.value };
    case 'string':
      return { name, type: AttributeType.STRING, s: utf8.encode(attribute.value) };
    case 'ints':
      if (!attribute.value.every(Number.isSafeInteger)) throw new InvalidSpecError(`Attribute '${name}' must hold integers`);
      return { name, type: AttributeType.INTS, ints: [...attribute.value] };
    case 'floats':
      return { name, type: AttributeType.FLOATS, floats: [...attribute.value] };
  }
}

export class GraphBuilder {
  readonly name: string;
  readonly #inputs: ValueInfoProto[] = [];
  readonly #initializers: TensorProto[] = [];
  readonly #nodes: NodeProto[] = [];
  readonly #outputs: ValueInfoProto[] = [];
  /** Values that exist so far: graph inputs, initializers, node outputs. */
  readonly #produced = new Set<string>();
  /** Names promised as graph outputs; a node may produce them later, nothing else may claim them. */
  readonly #declaredOutputs = new Set<string>();
  readonly #counters = new Map<string, number>();
  #initializerBytes = 0;

  constructor(name: string) {
    this.name = name;
  }

  /**
   * A name no value in the graph has and no declared output will have, derived from `hint`
   * (`hint`, else `hint_1`, `hint_2`, ...).
   */
  uniqueName(hint: string): string {
    const taken = (name: string): boolean => this.#produced.has(name) || this.#declaredOutputs.has(name);
    if (!taken(hint)) return hint;
    let n = this.#counters.get(hint) ?? 0;
    let name: string;
    do name = `${hint}_${++n}`;
    while (taken(name));
    this.#counters.set(hint, n);
    return name;
  }

  /** Declares a graph input; a string dim is symbolic (e.g. 'batch'). Returns its name. */
  input(name: string, type: ElementType, dims: ReadonlyArray<number | string>): string {
    this.#claim(name, 'graph input');
    this.#inputs.push(valueInfo(name, type, dims));
    return name;
  }

  /** Adds a constant tensor (stored as little-endian raw_data). Returns its name. */
  initializer(name: string, data: Float32Array | Int32Array | BigInt64Array, dims: readonly number[]): string {
    checkStaticDims(dims, `initializer '${name}'`);
    const count = dims.reduce((a, b) => a * b, 1);
    if (count !== data.length) {
      throw new InvalidSpecError(`Initializer '${name}' has dims [${dims.join(', ')}] (${count} values) but holds ${data.length}`);
    }
    this.#claim(name, 'initializer');
    this.#initializerBytes += data.byteLength;
    if (this.#initializerBytes > MAX_MODEL_BYTES) {
      throw new InvalidSpecError(`Initializers exceed ${MAX_MODEL_BYTES} bytes, the largest protobuf message; external data is not supported`);
    }
    this.#initializers.push({
      name,
      data_type: DATA_TYPES[elementTypeOf(data)],
      dims: [...dims],
      raw_data: rawLittleEndian(data),
    });
    return name;
  }

  /**
   * Appends a node with one output. `output` names it exactly (it must be new, or a declared
   * graph output not yet produced); without it the name is `opType` made unique. Every input
   * must already exist; '' marks an omitted optional input. Returns the output's name.
   */
  node(opType: string, inputs: readonly string[], output?: string, attributes: Record<string, Attribute> = {}): string {
    for (const input of inputs) {
      if (input !== '' && !this.#produced.has(input)) {
        throw new InvalidSpecError(`Node ${opType} reads '${input}', which no input, initializer or earlier node provides`);
      }
    }
    if (output !== undefined) checkName(output, `${opType} output`);
    const name = output ?? this.uniqueName(opType);
    if (this.#produced.has(name)) throw new InvalidSpecError(`The name '${name}' is already used in graph '${this.name}'`);
    this.#produced.add(name);
    this.#nodes.push({
      input: [...inputs],
      output: [name],
      // Node names live apart from value names; output names are unique, so this one is too.
      name: `${name}/${opType}`,
      op_type: opType,
      attribute: Object.entries(attributes).map(([key, value]) => encodeAttribute(key, value)),
    });
    return name;
  }

  /**
   * Declares a graph output. It may be declared before the node that produces it (which then
   * names it as its `output`), or name an existing value.
   */
  output(name: string, type: ElementType, dims: ReadonlyArray<number | string>): string {
    if (this.#declaredOutputs.has(name)) throw new InvalidSpecError(`Graph output '${name}' is declared twice`);
    checkName(name, 'graph output');
    this.#declaredOutputs.add(name);
    this.#outputs.push(valueInfo(name, type, dims));
    return name;
  }

  /** Serialises the graph as an ONNX ModelProto (IR_VERSION, default domain at OPSET_VERSION). */
  toBytes(info: ModelInfo): Uint8Array {
    for (const output of this.#outputs) {
      if (!this.#produced.has(output.name)) throw new InvalidSpecError(`Graph output '${output.name}' is declared but never produced`);
    }
    if (this.#outputs.length === 0) throw new InvalidSpecError(`Graph '${this.name}' has no outputs`);
    return encodeModel({
      ir_version: IR_VERSION,
      opset_import: [{ domain: '', version: OPSET_VERSION }],
      producer_name: info.producerName,
      producer_version: info.producerVersion,
      doc_string: info.docString ?? '',
      metadata_props: Object.entries(info.metadata ?? {}).map(([key, value]) => ({ key, value })),
      graph: {
        name: this.name,
        node: this.#nodes,
        initializer: this.#initializers,
        input: this.#inputs,
        output: this.#outputs,
      },
    });
  }

  #claim(name: string, what: string): void {
    checkName(name, what);
    if (this.#produced.has(name)) throw new InvalidSpecError(`The name '${name}' (${what}) is already used in graph '${this.name}'`);
    this.#produced.add(name);
  }
}

function checkName(name: string, what: string): void {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidSpecError(`A ${what} needs a non-empty name`);
}

function checkStaticDims(dims: readonly number[], what: string): void {
  for (const dim of dims) {
    if (!Number.isSafeInteger(dim) || dim < 0) throw new InvalidSpecError(`Dims of ${what} must be non-negative integers, not ${dim}`);
  }
}

function valueInfo(name: string, type: ElementType, dims: ReadonlyArray<number | string>): ValueInfoProto {
  const elemType = DATA_TYPES[type];
  if (elemType === undefined) throw new InvalidSpecError(`Unsupported element type '${String(type)}' for '${name}'`);
  return {
    name,
    type: {
      tensor_type: {
        elem_type: elemType,
        shape: {
          dim: dims.map((dim) => {
            if (typeof dim === 'string') {
              if (dim.length === 0) throw new InvalidSpecError(`A symbolic dim of '${name}' is empty`);
              return { dim_param: dim };
            }
            checkStaticDims([dim], `'${name}'`);
            return { dim_value: dim };
          }),
        },
      },
    },
  };
}

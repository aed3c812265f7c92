/**
 * ebrix: embedding-based retrieval for Node.js.
 */
export {
  DEVICE_PREFERENCES,
  FlatIndex,
  METRICS,
  VECTOR_STORAGES,
  type Device,
  type DevicePreference,
  type FlatIndexOptions,
  type MemoryUsage,
  type Metric,
  type AddOptions,
  type FlatIndexOpenOptions,
  type SearchOptions,
  type VectorStorage,
} from './index/flat.js';
export {
  IVFPQ_FILTER_STRATEGIES,
  IVFPQ_REFINES,
  IvfPqIndex,
  type IvfPqFilterStrategy,
  type IvfPqIndexOptions,
  type IvfPqMemoryUsage,
  type IvfPqRefine,
  type IvfPqSearchOptions,
  type IvfPqOpenOptions,
  type IvfPqTrainOptions,
} from './index/ivfpq.js';
export {
  IndexStore,
  indexFileKind,
  openIndex,
  type IndexKind,
  type IndexStoreOptions,
  type IndexVersion,
  type OpenIndexOptions,
  type StoredIndex,
} from './index/store.js';
export {
  HNSW_FILTER_STRATEGIES,
  HnswIndex,
  type HnswFilterStrategy,
  type HnswIndexOptions,
  type HnswSearchOptions,
} from './index/hnsw.js';
export { Attributes, type CompileFilterOptions, type CompiledFilter } from './index/attributes.js';
export {
  ATTRIBUTE_TYPES,
  type AttributeColumn,
  type AttributeCondition,
  type AttributeFilter,
  type AttributeRecord,
  type AttributeSchema,
  type AttributeSpec,
  type AttributeType,
  type AttributeValue,
  type Filter,
  type FilterScalar,
  type IdCondition,
  type IdToRow,
  type LogicalFilter,
} from './index/filter.js';
export { gpuInfo, type GpuInfo } from './gpu.js';
export { SearchResult, type Hit } from './index/search-result.js';
export { kmeans, type KMeansOptions, type KMeansResult } from './kmeans.js';
export { NO_ID, type Ids } from './index/ids.js';
export type { Vectors } from './index/vectors.js';
export {
  SIMD_LEVELS,
  hardwareThreads,
  measureFmaPeak,
  measureReadBandwidth,
  simdLevel,
  supportedSimdLevels,
  type SimdLevel,
} from './machine.js';
export {
  CorruptFileError,
  IoError,
  CorruptModelError,
  DeviceUnavailableError,
  DimensionMismatchError,
  DisposedError,
  DuplicateIdError,
  EbrixError,
  InvalidArgumentError,
  InvalidRecordError,
  InvalidSpecError,
  InvalidVectorError,
  NotTrainedError,
  OutOfMemoryError,
  OverloadedError,
  UnknownIdError,
  VersionMismatchError,
  type EbrixErrorCode,
} from './errors.js';

// Models at serving time.
export {
  FeatureEncoder,
  cardinality,
  fitDense,
  fitVocabulary,
  hashToken,
  inputsOf,
  tokenize,
  validateFeatureSpec,
  type CategoricalFeature,
  type DenseFeature,
  type EncodedTensor,
  type FeatureSpec,
  type TensorInput,
  type TextFeature,
} from './model/features.js';
export { textTerms } from './model/tokenize.js';
export {
  buildTowerModel,
  towerForward,
  validateTower,
  type DenseLayer,
  type EmbeddingTable,
  type TowerDefinition,
  type TowerHead,
  type TowerInput,
} from './model/onnx/tower.js';
export { GraphBuilder, attr } from './model/onnx/graph.js';
export { decodeModel } from './model/onnx/schema.js';
export { initTower, towerInputs, type TowerShape } from './model/compose.js';
export {
  readModelPackage,
  writeModelPackage,
  type ModelManifest,
  type TowerManifest,
  type WriteModelOptions,
} from './model/package.js';
export { TwoTowerModel, type EmbedOptions, type LoadOptions } from './model/two-tower.js';
export { Batcher, type BatchFn, type BatcherOptions, type BatcherStats } from './serve/batcher.js';
export {
  embedCorpus,
  type CorpusProgress,
  type EmbedCorpusOptions,
  type EmbedCorpusResult,
  type ItemEmbedder,
  type VectorSink,
} from './serve/embed-corpus.js';

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
  type HnswIndexOpenOptions,
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
  configure,
  threadCount,
  type ConfigureOptions,
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

// training data
export {
  WORDNET_TASKS,
  loadWordNet,
  wordnetQueries,
  type WordNetItem,
  type WordNetPos,
  type WordNetQuery,
  type WordNetQueryOptions,
  type WordNetSplit,
  type WordNetTask,
} from './train/wordnet.js';
export { readJsonl, writeJsonl, type ReadJsonlOptions } from './train/jsonl.js';

// training
export {
  compileModelSpec,
  type CompiledModel,
  type CompiledTask,
  type ModelSpec,
  type TaskKind,
  type TaskSpec,
  type TowerSpec,
} from './train/spec.js';
export {
  Trainer,
  type Example,
  type ExportOptions,
  type FitOptions,
  type FitResult,
  type TrainerOptions,
  type TrainProgress,
  type ValidationReport,
} from './train/trainer.js';
export { evaluate, type EvaluateOptions, type EvaluationPair, type EvaluationResult, type Embedder } from './train/evaluate.js';
export {
  trainWordNet,
  wordnetModelSpec,
  wordnetItemRecord,
  type TrainWordNetOptions,
  type TrainWordNetResult,
  type WordNetItemRecord,
} from './train/wordnet-model.js';

// serving
export {
  Retriever,
  type IndexSearchSettings,
  type ItemLookup,
  type QueryModel,
  type RetrievalIndex,
  type RetrieveOptions,
  type RetrieveResult,
  type RetrievedItem,
  type RetrieverOptions,
} from './serve/retriever.js';
export {
  OnnxRanker,
  type OnnxRankerSpec,
  type RankCandidate,
  type RankScores,
  type Ranker,
  type RankerFunction,
  type RankerObject,
} from './serve/ranker.js';
export { Bm25Scorer, type Bm25Options } from './serve/lexical.js';
export {
  LATENCY_BUCKETS_SECONDS,
  STAGES,
  LatencyHistogram,
  PrometheusText,
  RetrievalMetrics,
  type LatencySummary,
  type RetrievalMetricsSnapshot,
  type Stage,
  type StageTimings,
} from './serve/metrics.js';
export {
  MemoryStore,
  NAMESPACE_PATTERN,
  type Memory,
  type MemoryMetadata,
  type MemoryModel,
  type MemoryStoreOptions,
  type RecallOptions,
  type RecalledMemory,
} from './serve/memory.js';
export { EbrixServer, HTTP_ERROR_CODES, createServer, type HttpErrorCode, type ServerOptions } from './serve/http.js';

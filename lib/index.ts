/**
 * ebrix: embedding-based retrieval for Node.js.
 */
export { FlatIndex, METRICS, type FlatIndexOptions, type Metric, type SearchOptions } from './index/flat.js';
export { SearchResult, type Hit } from './index/search-result.js';
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
  CorruptModelError,
  DimensionMismatchError,
  DisposedError,
  DuplicateIdError,
  EbrixError,
  InvalidArgumentError,
  InvalidRecordError,
  InvalidSpecError,
  InvalidVectorError,
  OverloadedError,
  VersionMismatchError,
  type EbrixErrorCode,
} from './errors.js';

/**
 * The rule every index applies to its model version: vectors from two model versions never
 * share an index.
 */
import { VersionMismatchError } from '../errors.js';
import { invalid } from '../validate.js';

/**
 * The version an index holds after binding `version` to an index bound to `current`: the
 * same version again is a no-op; another one is EBRIX_VERSION_MISMATCH.
 */
export function bindVersion(current: string | undefined, version: unknown): string {
  if (typeof version !== 'string' || version.length === 0) throw invalid('a non-empty string', 'modelVersion', version);
  if (current !== undefined && current !== version) {
    throw new VersionMismatchError(
      `This index holds vectors of model version ${current} and cannot take vectors of version ${version}`,
    );
  }
  return version;
}

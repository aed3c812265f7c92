/**
 * The optional GPU: whether this process can use one, and if not, why.
 *
 * The CUDA code is a separate addon (build-cuda/Release/ebrix_cuda.node, built by
 * `npm run build:cuda`) so that a CPU-only install never builds it nor needs the CUDA
 * libraries. It is loaded on first use, once. Its absence, a failed load (no driver, a
 * missing libcublas) or an unusable device all read as `available: false` with a reason:
 * `gpuInfo()` never throws, and only asking for `device: 'cuda'` turns the reason into an error.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';

import { DeviceUnavailableError, callNative } from './errors.js';
import { packageRoot, type NativeCudaAddon, type NativeDeviceInfo } from './native.js';

export interface GpuInfo {
  /** A CUDA device ebrix can use. */
  available: boolean;
  /** Ordinal of the device probed; -1 when the CUDA addon did not load. */
  device: number;
  /** e.g. "NVIDIA H100 80GB HBM3"; empty when unknown. */
  name: string;
  /** e.g. "9.0"; empty when unknown. */
  computeCapability: string;
  multiprocessors: number;
  /** Bytes of device memory, and how many were free when probed. */
  totalMemory: number;
  freeMemory: number;
  /** CUDA driver and runtime versions, e.g. "13.0"; empty when unknown. */
  driverVersion: string;
  runtimeVersion: string;
  /** Why `available` is false; empty when it is true. */
  reason: string;
  /** The CUDA addon file used or looked for. */
  addonPath: string;
}

const BUILT_WITHOUT_CUDA =
  'ebrix was built without CUDA: run `npm run build:cuda` on a machine with nvcc and a CUDA driver';

const NO_DEVICE: Omit<GpuInfo, 'reason' | 'addonPath'> = {
  available: false,
  device: -1,
  name: '',
  computeCapability: '',
  multiprocessors: 0,
  totalMemory: 0,
  freeMemory: 0,
  driverVersion: '',
  runtimeVersion: '',
};

interface Loaded {
  info: Readonly<GpuInfo>;
  /** Set only when a device is available. */
  addon: NativeCudaAddon | undefined;
}

let loaded: Loaded | undefined;

/** What the GPU side of this process offers (device 0). Probed once, then cached. */
export function gpuInfo(): Readonly<GpuInfo> {
  loaded ??= load();
  return loaded.info;
}

/** The CUDA addon, or DeviceUnavailableError carrying the reason there is none. */
export function requireCuda(): NativeCudaAddon {
  loaded ??= load();
  if (loaded.addon === undefined) throw new DeviceUnavailableError(`No usable GPU: ${loaded.info.reason}`);
  return loaded.addon;
}

/**
 * The GPU side of a `device` option: for 'cuda' or 'auto' with a usable device, the index
 * `create` makes there. Otherwise (and for 'cpu') `index` is undefined and, for 'auto',
 * `reason` says why; 'cuda' without a usable device is DeviceUnavailableError. A device that
 * passed the probe and still refuses (another process took it, a CUDA call failed) means
 * the CPU for 'auto' too.
 */
export function openOnGpu<T>(
  device: 'cpu' | 'cuda' | 'auto',
  create: (addon: NativeCudaAddon, ordinal: number) => T,
): { index: T | undefined; reason: string } {
  if (device === 'cpu') return { index: undefined, reason: '' };
  const info = gpuInfo();
  if (!info.available) {
    if (device === 'cuda') throw new DeviceUnavailableError(`No usable GPU: ${info.reason}`);
    return { index: undefined, reason: info.reason };
  }
  try {
    return { index: callNative(() => create(requireCuda(), info.device)), reason: '' };
  } catch (error) {
    if (device === 'cuda' || !(error instanceof DeviceUnavailableError)) throw error;
    return { index: undefined, reason: error.message };
  }
}

/** Forgets the cached probe, so that a test can change EBRIX_CUDA_ADDON. Not public API. */
export function resetGpuForTests(): void {
  loaded = undefined;
}

function load(): Loaded {
  const fromEnv = process.env.EBRIX_CUDA_ADDON;
  const addonPath = fromEnv
    ? path.resolve(fromEnv)
    : path.join(packageRoot, 'build-cuda', 'Release', 'ebrix_cuda.node');
  const unavailable = (reason: string): Loaded => ({
    info: Object.freeze({ ...NO_DEVICE, reason, addonPath }),
    addon: undefined,
  });
  if (!existsSync(addonPath)) {
    return unavailable(fromEnv ? `cannot load ${addonPath} (from EBRIX_CUDA_ADDON): no such file` : BUILT_WITHOUT_CUDA);
  }
  let addon: NativeCudaAddon;
  let probe: NativeDeviceInfo;
  try {
    // process.dlopen rather than require: whatever EBRIX_CUDA_ADDON names is opened as a
    // shared library, never run as JavaScript.
    const module = { exports: {} };
    process.dlopen(module, addonPath);
    addon = module.exports as NativeCudaAddon;
    probe = addon.probeDevice(0);
  } catch (error) {
    return unavailable(`cannot load ${addonPath}: ${firstLine(error)}`);
  }
  const info: GpuInfo = {
    available: probe.available,
    device: probe.device,
    name: probe.name,
    computeCapability: probe.computeCapability,
    multiprocessors: probe.multiprocessors,
    totalMemory: probe.totalMemory,
    freeMemory: probe.freeMemory,
    driverVersion: cudaVersion(probe.driverVersion),
    runtimeVersion: cudaVersion(probe.runtimeVersion),
    reason: probe.available ? '' : probe.reason || 'the CUDA probe gave no reason',
    addonPath,
  };
  return { info: Object.freeze(info), addon: probe.available ? addon : undefined };
}

/** CUDA encodes versions as 1000 × major + 10 × minor. */
function cudaVersion(encoded: number): string {
  return encoded > 0 ? `${Math.floor(encoded / 1000)}.${Math.floor((encoded % 1000) / 10)}` : '';
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0]!;
}

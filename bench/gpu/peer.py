"""The peer of the device check: torch.topk(q @ X.T, k) on the same shapes and types as
ebrix_gpu_check's timings, in the same run, then the table of ratios.

    python3 bench/gpu/peer.py --ours gpu-check.jsonl [--json peer.json]
"""
import argparse
import json
import statistics

import torch


def time_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def uniform(shape, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.rand(shape, device="cuda", generator=g) * 2 - 1).to(dtype)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ours", required=True)
    parser.add_argument("--json")
    args = parser.parse_args()
    ours = [json.loads(line) for line in open(args.ours) if line.strip()]
    ceilings = next((r for r in ours if r["kind"] == "ceilings"), None)
    dtypes = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}
    rows = []
    data = {}
    for r in ours:
        if r["kind"] not in ("scan", "gemm"):
            continue
        key = (r["n"], r["dim"], r["storage"])
        if key not in data:
            data.clear()
            torch.cuda.empty_cache()
            data[key] = uniform((r["n"], r["dim"]), dtypes[r["storage"]], 1)
        x = data[key]
        q = uniform((r["nq"], r["dim"]), dtypes[r["storage"]], 2)
        k = r["k"]
        peer_ms = time_ms(lambda: torch.topk(q @ x.T, k), 20 if r["kind"] == "scan" else 5)
        rows.append({**r, "peerMs": peer_ms, "speedup": peer_ms / r["deviceMs"]})
    print()
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    if ceilings:
        print(f"ceilings (ebrix_gpu_check): read {ceilings['readGBs']:.0f} GB/s, "
              f"cuBLAS bf16 {ceilings['bf16Tflops']:.0f} TFLOP/s")
    print(f"{'case':<44} {'ebrix ms':>9} {'torch ms':>9} {'ratio':>7}  of ceiling")
    for r in rows:
        if r["kind"] == "scan":
            name = f"scan {r['n']//1_000_000}M x {r['dim']} {r['storage']} nq={r['nq']} k={r['k']}"
            ceiling = f"{100 * r['bandwidthFraction']:.0f}% of read bandwidth"
        else:
            name = f"gemm {r['nq']} x {r['n']//1_000_000}M x {r['dim']} {r['storage']} k={r['k']} tile={r['tileMB']}MB"
            ceiling = f"{100 * r['tensorFraction']:.0f}% of cuBLAS bf16"
        print(f"{name:<44} {r['deviceMs']:>9.3f} {r['peerMs']:>9.3f} {r['speedup']:>6.2f}x  {ceiling}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ceilings": ceilings, "rows": rows, "torch": torch.__version__,
                       "device": torch.cuda.get_device_name()}, f, indent=1)


if __name__ == "__main__":
    main()

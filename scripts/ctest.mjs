#!/usr/bin/env node
// Builds the core's C++ tests with CMake (core only, no Node headers) into build-ctest/ and
// runs them with ctest. Part of `npm test`; without cmake it says so and skips.
import { spawnSync } from 'node:child_process';
import os from 'node:os';

const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.error) throw r.error;
  if (r.status !== 0) process.exit(r.status ?? 1);
};

if (spawnSync('cmake', ['--version'], { stdio: 'ignore' }).error) {
  console.log('C++ tests skipped: cmake is not installed (install cmake >= 3.19 to run them).');
  process.exit(0);
}
const jobs = String(Math.max(1, os.availableParallelism?.() ?? os.cpus().length));
run('cmake', ['-S', '.', '-B', 'build-ctest', '-DCMAKE_BUILD_TYPE=Release', '-DEBRIX_TESTS=ON']);
run('cmake', ['--build', 'build-ctest', '--target', 'ebrix_core_tests', '-j', jobs]);
run('ctest', ['--test-dir', 'build-ctest', '--output-on-failure', '-j', jobs]);

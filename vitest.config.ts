import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Native searches use every core; running test files one at a time keeps timings sane
    // on small machines.
    fileParallelism: false,
    testTimeout: 60_000,
  },
});

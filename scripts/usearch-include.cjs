#!/usr/bin/env node
// Prints the folder holding usearch's C++ headers (<dir>/usearch/index_plugins.hpp), for
// binding.gyp and CMakeLists.txt. usearch is a dependency, so npm puts it in this package's
// node_modules or, when ebrix is itself installed as a dependency, hoists it into an
// enclosing node_modules: look upwards from the package root, as Node's resolution does
// (usearch's package.json is not in its "exports", so require.resolve cannot name it).
const fs = require('node:fs');
const path = require('node:path');

const header = path.join('usearch', 'include', 'usearch', 'index_dense.hpp');
let dir = path.resolve(__dirname, '..');
for (;;) {
  const candidate = path.join(dir, 'node_modules', header);
  if (fs.existsSync(candidate)) {
    process.stdout.write(path.dirname(path.dirname(candidate)));
    process.exit(0);
  }
  const parent = path.dirname(dir);
  if (parent === dir) break;
  dir = parent;
}
process.stderr.write(`ebrix: usearch's headers (node_modules/${header}) were not found above ${path.resolve(__dirname, '..')}; run npm install\n`);
process.exit(1);

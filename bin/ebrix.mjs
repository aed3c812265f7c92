#!/usr/bin/env node
// The `ebrix` command; its code is lib/cli.ts, compiled to dist/ when the package installs.
import { main } from '../dist/cli.js';

process.exitCode = await main(process.argv.slice(2));

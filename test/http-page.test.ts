/**
 * The search page in a real browser: Debian's Chromium driven by playwright-core (which
 * downloads no browser of its own). Skipped, saying why, where /usr/bin/chromium is missing
 * (CI installs it: see .ci/run).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Retriever, TwoTowerModel, createServer, type EbrixServer, type FlatIndex } from '../lib/index.js';
import { catalogIndex, catalogItem, catalogPackage } from './serve-fixtures.js';

const CHROMIUM = '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser) console.warn(`test/http-page.test.ts skipped: ${CHROMIUM} is missing (apt-get install -y chromium)`);

describe.skipIf(!haveBrowser)('search page in Chromium', () => {
  let dir: string;
  let model: TwoTowerModel;
  let index: FlatIndex;
  let server: EbrixServer;
  let url: string;
  let browser: Browser;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'ebrix-page-'));
    model = await TwoTowerModel.load(await catalogPackage(dir, 'catalog', 3), { threads: 1 });
    index = await catalogIndex(model, 100);
    const items = new Map(Array.from({ length: 100 }, (_, i) => [BigInt(1000 + i), catalogItem(i)]));
    server = await createServer({ retriever: new Retriever({ model, index, items }), token: 'page-token' });
    url = await server.listen();
    // Root has no user namespace to sandbox into; the browser only ever loads this local page.
    const rootArgs = process.getuid?.() === 0 ? ['--no-sandbox'] : [];
    browser = await chromium.launch({ executablePath: CHROMIUM, args: [...rootArgs, '--disable-gpu', '--disable-dev-shm-usage'] });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    index?.dispose();
    await model?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('takes a query, asks for the token, and shows the results with their scores and fields', async () => {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    await page.goto(url);
    // /v1/info needs the token: the page says so and shows the token field.
    await expect.poll(() => page.locator('#token-field').isVisible()).toBe(true);
    await page.fill('#token', 'page-token');
    await page.fill('input[name="text"]', 'red wooden chair');
    await page.selectOption('#k', '5');
    await page.click('button[type="submit"]');
    await page.locator('li.item').nth(4).waitFor();
    const items = await page.locator('li.item').all();
    expect(items).toHaveLength(5);
    const first = await items[0]!.innerText();
    expect(first).toMatch(/id \d{4} · score -?\d\.\d{4} · tower score -?\d\.\d{4}/);
    for (const field of ['title', 'price', 'rating', 'category']) expect(first).toContain(field);
    expect(await page.locator('#status').innerText()).toMatch(/^5 items · embed [\d.]+ ms · search [\d.]+ ms · rank [\d.]+ ms · total [\d.]+ ms$/);
    await expect.poll(() => page.locator('#model').innerText()).toMatch(/^catalog · version \S+ · 100 items$/);
    expect(await page.locator('#task-field').isVisible()).toBe(true);

    // The same order the API gives.
    const api = await fetch(`${url}/v1/search`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer page-token' },
      body: JSON.stringify({ query: { text: 'red wooden chair' }, k: 5 }),
    });
    const expected = ((await api.json()) as { items: { id: string }[] }).items.map((i) => i.id);
    const shown = await page.locator('li.item .scores b:first-of-type').allInnerTexts();
    expect(shown).toEqual(expected);

    // An error is shown, not thrown: a query field that fails to encode.
    await page.fill('input[name="text"]', '');
    await page.click('button[type="submit"]');
    await expect.poll(() => page.locator('#status').innerText()).toMatch(/items|EBRIX_/);
    // The only console errors are the 401 the first load ran into, which the page handled.
    expect(problems.filter((p) => !/401/.test(p))).toEqual([]);
    await page.close();
  });
});

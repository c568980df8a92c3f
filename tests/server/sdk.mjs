// sdk: the official `openai` node client against megaqwen serve (URL in MQ_URL, key in MQ_KEY).
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.MQ_URL, apiKey = process.env.MQ_KEY;
if (!baseURL || !apiKey) { console.error('usage: MQ_URL=http://127.0.0.1:PORT/v1 MQ_KEY=KEY node sdk.mjs'); process.exit(2); }
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
let passed = 0, failed = 0;
async function test(name, fn) {
  try { await fn(); passed++; } catch (e) { failed++; console.log(`FAIL: ${name}: ${e && e.stack || e}`); }
}
const msgs = [{ role: 'user', content: 'Hi there' }];

let greedy = null;
await test('chat non-stream', async () => {
  const r = await client.chat.completions.create({ model: 'tiny', messages: msgs, max_tokens: 8, temperature: 0 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.message.role, 'assistant');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(['stop', 'length'].includes(c.finish_reason), c.finish_reason);
  assert.ok(Number.isInteger(r.usage.prompt_tokens) && r.usage.prompt_tokens > 0);
  assert.ok(Number.isInteger(r.usage.completion_tokens) && r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 8);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  if (c.finish_reason === 'length') assert.equal(r.usage.completion_tokens, 8);
  greedy = c.message.content;
});

await test('chat stream == non-stream greedy', async () => {
  const s = await client.chat.completions.create({ model: 'tiny', messages: msgs, max_tokens: 8, temperature: 0, stream: true });
  let text = '', n = 0, finish = null;
  for await (const ch of s) {
    n++;
    assert.equal(ch.object, 'chat.completion.chunk');
    const c = ch.choices[0];
    if (c && c.delta && typeof c.delta.content === 'string') text += c.delta.content;
    if (c && c.finish_reason) finish = c.finish_reason;
  }
  assert.ok(n >= 2, `chunks ${n}`);
  assert.ok(['stop', 'length'].includes(finish), finish);
  assert.notEqual(greedy, null);
  assert.equal(text, greedy);
});

await test('completions.create', async () => {
  const r = await client.completions.create({ model: 'tiny', prompt: 'Hello there', max_tokens: 5, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 5);
  const again = await client.completions.create({ model: 'tiny', prompt: 'Hello there', max_tokens: 5, temperature: 0 });
  assert.equal(again.choices[0].text, r.choices[0].text);
});

await test('logprobs (chat and completions with echo)', async () => {
  const r = await client.chat.completions.create({ model: 'tiny', messages: msgs, max_tokens: 4, temperature: 0,
                                                   logprobs: true, top_logprobs: 3 });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, r.usage.completion_tokens);
  for (const t of lp) {
    assert.ok(t.logprob <= 0 && t.top_logprobs.length === 3, JSON.stringify(t));
    assert.equal(t.top_logprobs[0].token, t.token);  // greedy: the chosen token is the most likely
  }
  assert.equal(Buffer.from(lp.flatMap((t) => t.bytes)).toString(), r.choices[0].message.content);
  const e = await client.completions.create({ model: 'tiny', prompt: [1994, 62, 315], max_tokens: 0, echo: true,
                                              logprobs: 1 });
  const l = e.choices[0].logprobs;
  assert.equal(l.tokens.length, 3);
  assert.equal(l.token_logprobs[0], null);
  assert.ok(l.token_logprobs.slice(1).every((x) => x <= 0), JSON.stringify(l));
});

await test('n = 3 (non-stream and stream)', async () => {
  const args = { model: 'tiny', messages: msgs, max_tokens: 4, temperature: 2, top_p: 1, seed: 11, n: 3 };
  const r = await client.chat.completions.create(args);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  const s = await client.chat.completions.create({ ...args, stream: true });
  const text = ['', '', ''];
  for await (const ch of s) for (const c of ch.choices) if (c.delta && c.delta.content) text[c.index] += c.delta.content;
  assert.deepEqual(text, r.choices.map((c) => c.message.content));
});

await test('models.list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes('tiny'), JSON.stringify(ids));
});

await test('wrong key -> AuthenticationError 401', async () => {
  const bad = new OpenAI({ baseURL, apiKey: apiKey + 'x', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
});

await test('temperature -1 -> BadRequestError 400', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'tiny', messages: msgs, max_tokens: 2, temperature: -1 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && typeof e.message === 'string' && e.message.length > 0);
});

console.log(`sdk: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

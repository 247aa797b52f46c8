// Tails a tertulia conversation with the Durable Streams client
// (`stream()` from @durable-streams/client): from where the conversation
// ends now, asks a question, drops the connection after CUT_AFTER chunks
// of the answer, resumes from the last offset it was given, and reads on
// until the answer's stored message. Prints one JSON line: what it saw.
import { stream } from '@durable-streams/client';

const { STREAM_URL, MESSAGES_URL, KEY, CUT_AFTER, QUESTION, LIVE } = process.env;
const headers = { 'X-API-Key': KEY };
const live = LIVE === 'true' ? true : LIVE;

// Reads items from `offset` until `stop(item)` says so; returns the offset
// of the last batch whose items it took whole, and what it took.
async function read(offset, stop) {
  const controller = new AbortController();
  const response = await stream({ url: STREAM_URL, headers, offset, live, signal: controller.signal });
  const taken = [];
  let last = offset;
  await new Promise((resolve, reject) => {
    response.subscribeJson(async (batch) => {
      if (controller.signal.aborted) return;
      let done = false;
      for (const item of batch.items) {
        taken.push(item);
        if (stop(item, taken)) done = true;
      }
      last = batch.offset;
      if (done) {
        // The client goes away mid-stream, as a closed tab or a lost network would.
        controller.abort();
        response.cancel();
        resolve();
      }
    });
    const early = () => { if (!controller.signal.aborted) reject(new Error('the stream ended early')); };
    response.closed.then(early, (error) => { if (!controller.signal.aborted) reject(error); });
  });
  return { offset: last, taken };
}

const head = await fetch(STREAM_URL, { method: 'HEAD', headers });
const start = head.headers.get('stream-next-offset');

// The question goes in once the tail is listening.
setTimeout(() => {
  fetch(MESSAGES_URL, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    body: JSON.stringify({ role: 'user', content: QUESTION }),
  }).then((answer) => { if (answer.status !== 201) throw new Error(`post: ${answer.status}`); });
}, 200);

const cut = Number(CUT_AFTER);
const chunks = (items) => items.filter((item) => item.type === 'chunk');
const first = await read(start, (_, taken) => chunks(taken).length >= cut);
const answerId = chunks(first.taken)[0].message_id;
const second = await read(first.offset, (item) =>
  item.type === 'message' && item.message.id === answerId);
const stored = second.taken.find((item) => item.type === 'message' && item.message.id === answerId);

console.log(JSON.stringify({
  start,
  cut_at: first.offset,
  before: chunks(first.taken).map((item) => item.content).join(''),
  after: chunks(second.taken).map((item) => item.content).join(''),
  chunks_before: chunks(first.taken).length,
  chunks_after: chunks(second.taken).length,
  first_items: first.taken.map((item) => item.type),
  second_items: second.taken.map((item) => item.type),
  answer_id: answerId,
  stored: stored?.message ?? null,
}));
process.exit(0);

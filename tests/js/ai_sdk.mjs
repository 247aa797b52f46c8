// Drives tertulia's UI message stream with the AI SDK's own client code
// (DefaultChatTransport and readUIMessageStream from the `ai` package).
// Prints one JSON line: what the SDK made of the stream.
import { DefaultChatTransport, readUIMessageStream } from 'ai';

const { BASE, KEY, CHAT_ID, MESSAGE_ID, TEXT, MODE } = process.env;
const transport = new DefaultChatTransport({
  api: `${BASE}/ai-sdk/chat`,
  headers: { 'X-API-Key': KEY },
});

const message = { id: MESSAGE_ID, role: 'user', parts: [{ type: 'text', text: TEXT }] };

// Reads chunks, keeping their types, into the SDK's finished UI message.
async function finish(stream, types, stopAfterDeltas) {
  let last;
  let deltas = 0;
  const seen = stream.pipeThrough(new TransformStream({
    transform(chunk, controller) {
      types.push(chunk.type);
      if (chunk.type === 'text-delta') deltas += 1;
      controller.enqueue(chunk);
    },
  }));
  for await (const snapshot of readUIMessageStream({ stream: seen })) {
    last = snapshot;
    if (stopAfterDeltas && deltas >= stopAfterDeltas) break;
  }
  return last;
}

const result = {};
if (MODE === 'send' || MODE === 'regenerate') {
  const types = [];
  const trigger = MODE === 'send' ? 'submit-message' : 'regenerate-message';
  const stream = await transport.sendMessages({
    chatId: CHAT_ID, messages: [message], trigger, messageId: undefined,
  });
  result.message = await finish(stream, types);
  result.types = types;
} else if (MODE === 'drop-and-resume') {
  const abort = new AbortController();
  const stream = await transport.sendMessages({
    chatId: CHAT_ID, messages: [message], trigger: 'submit-message', messageId: undefined,
    abortSignal: abort.signal,
  });
  result.partial = await finish(stream, [], 3);
  abort.abort();
  const types = [];
  const resumed = await transport.reconnectToStream({ chatId: CHAT_ID });
  result.message = resumed ? await finish(resumed, types) : null;
  result.types = types;
} else if (MODE === 'resume') {
  const resumed = await transport.reconnectToStream({ chatId: CHAT_ID });
  result.message = resumed ? await finish(resumed, []) : null;
}
console.log(JSON.stringify(result));

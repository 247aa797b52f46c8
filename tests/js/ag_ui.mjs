// Runs one agent turn against tertulia with AG-UI's own client
// (HttpAgent from @ag-ui/client). Prints one JSON line: the events the
// client received, its messages and its state after the run.
import { HttpAgent } from '@ag-ui/client';

const { BASE, KEY, THREAD_ID, MESSAGE_ID, TEXT, STATE } = process.env;
const agent = new HttpAgent({
  url: `${BASE}/ag-ui`,
  headers: { 'X-API-Key': KEY },
  threadId: THREAD_ID,
  initialState: STATE ? JSON.parse(STATE) : {},
  initialMessages: [{ id: MESSAGE_ID, role: 'user', content: TEXT }],
});

const events = [];
let error = null;
try {
  await agent.runAgent({ runId: `run-${MESSAGE_ID}` }, {
    onEvent({ event }) { events.push(event); },
  });
} catch (caught) {
  error = String(caught && caught.message || caught);
}
console.log(JSON.stringify({ events, messages: agent.messages, state: agent.state, error }));

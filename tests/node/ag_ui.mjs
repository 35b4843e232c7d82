// Drives @ag-ui/client against a live dari server, or checks recorded events with its verifier.
// Usage: node ag_ui.mjs '<json>'
//   {mode: "run", url, threadId, runId, text}: HttpAgent.runAgent() (its own event verifier is
//     always on); prints the events it applied and the assistant message it built.
//   {mode: "verify", events: [...]}: the events through the package's schemas (EventSchemas)
//     and verifyEvents, as a stream received over any transport would be.
import { HttpAgent, verifyEvents } from "@ag-ui/client";
import { EventSchemas } from "@ag-ui/core/schemas";
import { from, lastValueFrom, toArray } from "rxjs";

const args = JSON.parse(process.argv[2]);

async function run() {
  const agent = new HttpAgent({ url: args.url, threadId: args.threadId });
  agent.messages = [{ id: `${args.runId}-user`, role: "user", content: args.text }];
  const events = [];
  const result = await agent.runAgent(
    { runId: args.runId },
    { onEvent: ({ event }) => void events.push(event) },
  );
  const answer = result.newMessages.filter((m) => m.role === "assistant");
  return { events, text: answer.map((m) => m.content).join(""), messages: agent.messages };
}

async function verify() {
  const parsed = args.events.map((event) => EventSchemas.parse(event));
  const verified = await lastValueFrom(from(parsed).pipe(verifyEvents(false), toArray()));
  return { verified: verified.length };
}

const modes = { run, verify };
modes[args.mode]().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  },
  (error) => {
    process.stderr.write(`${error?.stack ?? error}\n`);
    process.exit(1);
  },
);

// Drives the `ai` package's own DefaultChatTransport against a live dari server.
// Usage: node ai_sdk.mjs '<json: {mode, api, chatId, text, messageId?, cutAfter?, stopAfter?,
// resumeApi?}>' (resumeApi: resume and stop through another node; default api), or
// '{mode: "check", chunks}': chunks rendered elsewhere, checked and assembled by the package
// Prints one JSON line: what the transport delivered, every chunk checked by the package's own
// uiMessageChunkSchema, and the text readUIMessageStream assembled.
import { DefaultChatTransport, readUIMessageStream, uiMessageChunkSchema } from "ai";

const args = JSON.parse(process.argv[2]);
const transport = new DefaultChatTransport({ api: args.api });
const resumeApi = args.resumeApi ?? args.api;
const resumer = new DefaultChatTransport({ api: resumeApi });
const schema = uiMessageChunkSchema();

function userMessage() {
  return {
    id: args.messageId ?? `m-${Date.now()}`,
    role: "user",
    parts: [{ type: "text", text: args.text }],
  };
}

// Reads a chunk stream (as the transport returns it) to its end, or until `until` says stop.
// Returns the chunks and the message readUIMessageStream built from them.
async function consume(stream, until = () => false) {
  const chunks = [];
  const [forChunks, forMessage] = stream.tee();
  const messages = readUIMessageStream({ stream: forMessage });
  const reader = forChunks.getReader();
  let stopped = false;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    const checked = await schema.validate(value);
    if (!checked.success) throw new Error(`invalid chunk ${JSON.stringify(value)}: ${checked.error}`);
    chunks.push(structuredClone(value)); // the message builder updates data parts in place
    if (until(chunks)) {
      stopped = true;
      break;
    }
  }
  let message;
  if (!stopped) {
    for await (const built of messages) message = built;
  }
  return { chunks, message, stopped, reader };
}

function textOf(message) {
  if (!message) return null;
  return message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
}

const deltas = (chunks) => chunks.filter((c) => c.type === "text-delta").length;
const deltaText = (chunks) => chunks.filter((c) => c.type === "text-delta").map((c) => c.delta).join("");

async function send(abortSignal) {
  return transport.sendMessages({
    chatId: args.chatId,
    messages: [userMessage()],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal,
  });
}

async function main() {
  if (args.mode === "check") {
    // Chunks rendered elsewhere (args.chunks), through the package's schema and message builder.
    const stream = new ReadableStream({
      start(controller) {
        for (const chunk of args.chunks) controller.enqueue(chunk);
        controller.close();
      },
    });
    const { chunks, message } = await consume(stream);
    return { chunks, message };
  }
  if (args.mode === "send") {
    const { chunks, message } = await consume(await send(undefined));
    return { chunks, text: textOf(message), message };
  }
  // Cut the POST's fetch mid-answer, as a reloaded page or a dropped network would.
  const controller = new AbortController();
  const first = await consume(await send(controller.signal), (c) => deltas(c) >= args.cutAfter);
  controller.abort();
  const before = deltaText(first.chunks);
  const resumed = await resumer.reconnectToStream({ chatId: args.chatId });
  if (resumed === null) return { before, resumed: null };
  if (args.mode === "resume") {
    const { chunks, message } = await consume(resumed);
    return { before, chunks, text: textOf(message), message };
  }
  if (args.mode === "stop") {
    // Stop the resumed stream: DELETE the stream URL (what a stop button calls).
    const partial = await consume(resumed, (c) => deltas(c) >= args.stopAfter);
    const response = await fetch(`${resumeApi}/${encodeURIComponent(args.chatId)}/stream`, {
      method: "DELETE",
    });
    const rest = [];
    while (true) {
      const { done, value } = await partial.reader.read();
      if (done) break;
      const checked = await schema.validate(value);
      if (!checked.success) throw new Error(`invalid chunk ${JSON.stringify(value)}`);
      rest.push(value);
    }
    const chunks = [...partial.chunks, ...rest];
    return { before, chunks, deleteStatus: response.status, text: deltaText(chunks) };
  }
  throw new Error(`unknown mode ${args.mode}`);
}

main().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  },
  (error) => {
    process.stderr.write(`${error?.stack ?? error}\n`);
    process.exit(1);
  },
);

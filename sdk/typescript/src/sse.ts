// A Server-Sent Events parser (the WHATWG event stream format) over a byte stream.

export interface ServerSentEvent {
  event: string;
  data: string;
  id: string | undefined;
}

/** The lines of a byte stream (`\n`, `\r\n` or `\r` ends a line). */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = stream.getReader();
  const text = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += text.decode(value, { stream: true });
      let at: number;
      while ((at = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const nl = buffer.startsWith("\r\n", at) ? 2 : 1;
        if (buffer[at] === "\r" && at + 1 === buffer.length) break; // a \r\n split across chunks
        yield buffer.slice(0, at);
        buffer = buffer.slice(at + nl);
      }
    }
    if (buffer) yield buffer.replace(/\r$/, "");
  } finally {
    await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

/** Feeds lines and dispatches events on blank lines. */
export class Decoder {
  private data: string[] = [];
  private event = "";
  private id: string | undefined;

  feed(line: string): ServerSentEvent | undefined {
    if (line === "") {
      if (this.data.length === 0 && !this.event) return undefined;
      const out = { event: this.event || "message", data: this.data.join("\n"), id: this.id };
      this.data = [];
      this.event = "";
      return out;
    }
    if (line.startsWith(":")) return undefined; // a comment: keep-alive pings
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") this.data.push(value);
    else if (name === "event") this.event = value;
    else if (name === "id" && !value.includes("\0")) this.id = value;
    return undefined;
  }
}

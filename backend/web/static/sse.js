// Server-Sent Events over a fetch() response body. EventSource cannot POST, so the page reads the body itself.
//
// Frames are separated by a blank line; lines may end in \n, \r\n or \r (the server's frames use \n, its keep-alive
// pings use \r\n). Lines starting with ":" are comments (pings) and are ignored. A frame whose data is "[DONE]" ends
// the stream. Frames may be split anywhere across network chunks, including inside a UTF-8 character or between the
// \r and \n of one line break.

/** Extract the data of one frame (its `data:` lines joined by \n), or null if it has none. */
export function frameData(frame) {
  return frameFields(frame).data;
}

/** The `data` (or null) and the `id` (or null) of one frame. */
export function frameFields(frame) {
  const data = [];
  let id = null;
  for (const line of frame.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "id" && !value.includes("\0")) id = value;
  }
  return { data: data.length ? data.join("\n") : null, id };
}

/**
 * Read an SSE stream and call `onEvent` with each parsed JSON event.
 *
 * @param {ReadableStream<Uint8Array>} body The response body.
 * @param {(event: any, id: string | null) => void} onEvent Called once per JSON frame, in order, with the frame's
 *   `id:` (null when it has none), so a dropped stream can be rejoined with `Last-Event-ID`.
 * @returns {Promise<boolean>} true if the stream ended with `[DONE]`, false if it just ended.
 * Rejects with the reader's error (an AbortError when the fetch was aborted).
 */
export async function readEventStream(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    // A chunk may end between the \r and \n of one line break: keep a trailing \r until the next chunk.
    let held = "";
    if (!done && buffer.endsWith("\r")) {
      held = "\r";
      buffer = buffer.slice(0, -1);
    }
    buffer = buffer.replace(/\r\n?/g, "\n");
    if (done && buffer.trim()) buffer += "\n\n"; // a last frame without its blank line still counts
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const { data, id } = frameFields(frame);
      if (data === null) continue;
      if (data === "[DONE]") {
        reader.cancel().catch(() => {});
        return true;
      }
      let event;
      try {
        event = JSON.parse(data);
      } catch {
        continue; // not JSON: not part of this protocol
      }
      onEvent(event, id);
    }
    buffer += held;
    if (done) return false;
  }
}

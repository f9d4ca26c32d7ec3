/**
 * Acting on one `chorus.v1` client event, whichever transport carried it: a WebSocket text
 * frame (`src/connection.ts`) or the body of a POST (`src/sse.ts`). The untrusted text is
 * parsed and validated here, at the edge, so both transports accept and refuse exactly alike.
 * @module
 */
import type { Hub, Member } from "./hub.ts";
import { parseClientEvent, type ProtocolError, protocolError } from "./protocol.ts";

/**
 * Parse `text` as one client event and do what it asks for `member` (publish a message,
 * rename). Returns the error to tell the client when the event is refused, so each transport
 * can answer in its own way (an `error` event, an HTTP status); undefined when it was done.
 */
export function actOnEvent(hub: Hub, member: Member, text: string): ProtocolError | undefined {
  const event = parseClientEvent(text);
  switch (event.type) {
    case "error":
      return event;
    case "message":
      hub.publish(member.room, event.text, member);
      return undefined;
    case "rename":
      if (member.nameLocked) return protocolError("name_locked", "your name cannot be changed");
      hub.rename(member, event.name);
      return undefined;
  }
}

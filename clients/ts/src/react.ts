// useRoomcast: one room of a RoomcastClient as React state.
//
// StrictMode mounts, unmounts and mounts again every effect in development. The seeds' hooks
// opened a socket and added a listener in each mount and lost track of the first, so every
// message arrived twice. Here the effect creates the client without connecting and connects on
// the next macrotask: StrictMode's synchronous unmount cancels that, so only the surviving
// mount ever opens a socket, and each mount removes exactly the listeners it added.

import { useCallback, useEffect, useRef, useState } from "react";

import { RoomcastClient } from "./client.js";
import type { ConnectionState, PendingMessage, RoomcastClientOptions } from "./options.js";
import type { AckEvent, ChatMessage, UserInfo } from "./types.js";

export interface UseRoomcastOptions extends Omit<RoomcastClientOptions, "autoConnect"> {
  /** Use this client (the caller connects and closes it) instead of one per hook. */
  client?: RoomcastClient;
}

export interface UseRoomcast {
  /** The room's messages, oldest first, each once (by `seq`). */
  messages: ChatMessage[];
  /** The room's members. */
  users: UserInfo[];
  /** Messages sent and not yet acknowledged. */
  pending: PendingMessage[];
  /** Sends to the room; resolves with the ack. */
  send: (content: string, data?: unknown) => Promise<AckEvent>;
  status: ConnectionState;
  /** The client, for what the hook does not cover (null before the first effect). */
  client: RoomcastClient | null;
}

/** Joins `room` over `options.url` and keeps its messages, members and connection state. */
export function useRoomcast(room: string, options: UseRoomcastOptions): UseRoomcast {
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [users, setUsers] = useState<UserInfo[]>([]);
  const [pending, setPending] = useState<PendingMessage[]>([]);
  const [status, setStatus] = useState<ConnectionState>("closed");
  const [client, setClient] = useState<RoomcastClient | null>(null);
  // The latest options, read when connecting: a new tokenProvider function on each render must
  // not reconnect.
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const shared = options.client;
  const url = options.url;

  useEffect(() => {
    const { client: given, ...clientOptions } = optionsRef.current;
    const current =
      given ??
      new RoomcastClient({
        ...clientOptions,
        tokenProvider: clientOptions.tokenProvider && ((reason) => optionsRef.current.tokenProvider!(reason)),
        autoConnect: false,
      });
    setMessages([]);
    setUsers(current.members(room));
    setPending(current.pending(room));
    setStatus(current.state);
    setClient(current);
    const unsubscribe = [
      current.on("state", ({ state }) => setStatus(state)),
      current.on("message", (message) => {
        if (message.room !== room) return;
        setMessages((list) => insertBySeq(list, message));
      }),
      // What a resume skipped, read over HTTP (option `history`): older than what is shown.
      current.on("gap", (gap) => {
        if (gap.room !== room) return;
        setMessages((list) => gap.messages.reduce(insertBySeq, list));
      }),
      current.on("members", (event) => {
        if (event.room === room) setUsers(event.users);
      }),
      current.on("pending", () => setPending(current.pending(room))),
    ];
    current.join(room);
    // Deferred: StrictMode's simulated unmount runs before this and cancels it.
    const start = given ? undefined : setTimeout(() => current.connect(), 0);
    return () => {
      clearTimeout(start);
      for (const off of unsubscribe) off();
      if (given) given.leave(room);
      else current.close();
    };
  }, [room, url, shared]);

  const send = useCallback(
    (content: string, data?: unknown) =>
      client ? client.send(room, content, data === undefined ? {} : { data }) : Promise.reject(new Error("not connected yet")),
    [client, room],
  );

  return { messages, users, pending, send, status, client };
}

/** `list` with `message` in `seq` order, unless a message with its `seq` (or id) is there already. */
function insertBySeq(list: ChatMessage[], message: ChatMessage): ChatMessage[] {
  if (list.some((m) => m.id === message.id || (m.seq === message.seq && typeof m.seq === "number"))) return list;
  const last = list[list.length - 1];
  if (!last || !(message.seq < last.seq)) return [...list, message];
  const index = list.findIndex((m) => m.seq > message.seq);
  return [...list.slice(0, index), message, ...list.slice(index)];
}

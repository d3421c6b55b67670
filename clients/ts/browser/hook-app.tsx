// A test page for useRoomcast: the hook under React.StrictMode (double mounting in
// development), with a button that unmounts it. Bundled by hook.test.ts.

import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";

import type { ChatMessage, RoomcastClient } from "../src/index.js";
import { useRoomcast } from "../src/react.js";

declare global {
  interface Window {
    __client: RoomcastClient | null;
    /** The test's history reader (`page.exposeFunction`: read from Node, no CORS). */
    __readHistory?: (room: string, before: number, limit: number) => Promise<ChatMessage[]>;
  }
}

const params = new URLSearchParams(location.search);
const url = params.get("ws")!;
const token = params.get("token")!;

function Chat() {
  const { messages, users, status, send, client } = useRoomcast("hooks", {
    url,
    token,
    history: (room, page) => window.__readHistory!(room, page.before, page.limit),
  });
  useEffect(() => {
    window.__client = client;
  }, [client]);
  return (
    <div>
      <p id="status">{status}</p>
      <p id="users">{users.map((u) => u.user_id).sort().join(",")}</p>
      <ul id="messages">
        {messages.map((m) => (
          <li key={m.seq}>{m.content}</li>
        ))}
      </ul>
      <button id="send" onClick={() => void send("from the hook")}>
        send
      </button>
    </div>
  );
}

function App() {
  const [shown, setShown] = useState(true);
  return (
    <>
      <button id="unmount" onClick={() => setShown(false)}>
        unmount
      </button>
      {shown && <Chat />}
    </>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);

// The /ws driver: one socket at a time, a fresh ticket per attempt, resume after the last seq,
// reconnect with backoff. It owns the socket and the timers; the rules are in connection.ts.

import { ApiError } from "../lib/api";
import type { WsMessage } from "../lib/types";
import {
  adviceForClose, backoffMs, nextLastSeq, parseMessage, socketUrl, type ConnState,
} from "./connection";

export interface LiveSocketOptions {
  fetchTicket: () => Promise<string>;
  /** Messages in arrival order, handed over in small batches (one per FLUSH_MS). */
  onMessages: (messages: WsMessage[]) => void;
  onState: (state: ConnState) => void;
}

const FLUSH_MS = 100;

export class LiveSocket {
  private readonly options: LiveSocketOptions;
  private socket: WebSocket | null = null;
  private lastSeq: number | null = null;
  private attempt = 0;
  private retryTimer: number | undefined;
  private flushTimer: number | undefined;
  private buffer: WsMessage[] = [];
  private stopped = false;
  private readonly onOnline = (): void => this.reconnectNow();

  constructor(options: LiveSocketOptions) {
    this.options = options;
  }

  start(): void {
    window.addEventListener("online", this.onOnline);
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    window.clearTimeout(this.retryTimer);
    this.flush();
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, "page closed");
  }

  private reconnectNow(): void {
    if (this.stopped || this.socket !== null) return;
    window.clearTimeout(this.retryTimer);
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.options.onState("connecting");
    let ticket: string;
    try {
      ticket = await this.options.fetchTicket();
    } catch (error) {
      // 401: the key is gone; the app shows the sign-in form and stops this socket.
      if (error instanceof ApiError && error.status === 401) return;
      this.retryLater(false);
      return;
    }
    if (this.stopped) return;
    const socket = new WebSocket(socketUrl(window.location, ticket, this.lastSeq));
    this.socket = socket;
    socket.onmessage = (frame: MessageEvent) => {
      if (this.socket !== socket || typeof frame.data !== "string") return;
      const message = parseMessage(frame.data);
      if (message === null) return;
      this.lastSeq = nextLastSeq(this.lastSeq, message);
      if (message.type === "snapshot" || message.type === "resume") {
        this.attempt = 0;
        this.options.onState("live");
      }
      this.buffer.push(message);
      if (this.flushTimer === undefined) {
        this.flushTimer = window.setTimeout(() => this.flush(), FLUSH_MS);
      }
    };
    socket.onclose = (close: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.flush();
      console.info(`/ws closed: ${close.code} ${close.reason}`);
      if (!this.stopped) this.retryLater(adviceForClose(close.code) === "retry-slowly");
    };
  }

  private retryLater(slowly: boolean): void {
    if (this.stopped) return;
    this.options.onState("offline");
    const delay = backoffMs(slowly ? this.attempt + 4 : this.attempt);
    this.attempt += 1;
    this.retryTimer = window.setTimeout(() => void this.connect(), delay);
  }

  private flush(): void {
    window.clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.buffer.length === 0) return;
    const messages = this.buffer;
    this.buffer = [];
    this.options.onMessages(messages);
  }
}

// Compiled by tests/test_javascript.py with tsc --strict against the client's
// .d.ts and the interfaces `python3 -m twisted_hub typescript` generated for
// the demo hubs (into ../generated/).  The @ts-expect-error lines prove the
// generated types are enforced: each must be an error, or tsc fails.
import { connect, ReconnectingHubClient, type HubClient } from "../../dist/index.js";
import { ChatHubName, EchoHubName, type ChatHub, type ChatReceiver, type EchoHub } from "../generated/demo-hubs.js";

const receiver: ChatReceiver = {
  said(room: string, user: string, text: string): void {
    console.log(room, user, text);
  },
  joined(): void {},
  left(): void {},
};

export async function typed(url: string): Promise<number> {
  const client: HubClient = await connect(url, ChatHubName, { receiver });
  const chat = client.proxy<ChatHub>();
  const members: number = await chat.join("lobby", "ann");
  const rooms: string[] = await chat.rooms();
  // @ts-expect-error: join takes (room: string, user: string)
  await chat.join("lobby", 42);
  // @ts-expect-error: say answers a number, not a string
  const wrong: string = await chat.say("lobby", "hi");
  // @ts-expect-error: ChatHub has no method "kick"
  await chat.kick("bob");
  const echo = (await connect(url, EchoHubName)).proxy<EchoHub>();
  const sum: number = await echo.add(1, 2);
  await echo.ask("confirm", "quit?", 1);
  // @ts-expect-error: add wants numbers
  await echo.add("1", 2);
  const again = new ReconnectingHubClient(url, ChatHubName, { receiver, onConnected: (c) => c.proxy<ChatHub>().join("lobby", "ann") });
  // @ts-expect-error: a receiver must implement every ChatReceiver method
  const partial: ChatReceiver = { said() {} };
  void again;
  void partial;
  void wrong;
  return members + rooms.length + sum;
}

import { describe, expect, it } from 'vitest';
import { accumulate, applyChatEvent, chatFromRecord, emptyChat, leafOf, messageList, outcomeOf, pathTo, siblingsOf } from './chat';
import type { ChatEvent, ChatState } from './types';

const ev = (type: string, data?: unknown, message_id = 'm1', chat_id = 'c1'): ChatEvent => ({ chat_id, message_id, data: { type, data } });
const run = (events: ChatEvent[], state: ChatState = emptyChat('c1')) => events.reduce(applyChatEvent, state);
const msg = (s: ChatState, id = 'm1') => s.messages[id];

describe('applyChatEvent', () => {
  it('status pushes to the status list in order', () => {
    const s = run([ev('status', { description: 'Searching', done: false }), ev('status', { description: 'Done', done: true })]);
    expect(msg(s).statusHistory).toEqual([
      { description: 'Searching', done: false },
      { description: 'Done', done: true }
    ]);
  });

  it.each(['message', 'chat:message:delta'])('%s appends content', (type) => {
    const s = run([ev(type, { content: 'Hel' }), ev(type, { content: 'lo' })]);
    expect(msg(s).content).toBe('Hello');
  });

  it.each(['replace', 'chat:message'])('%s replaces content', (type) => {
    const s = run([ev('message', { content: 'draft' }), ev(type, { content: 'final' })]);
    expect(msg(s).content).toBe('final');
  });

  it.each(['embeds', 'chat:message:embeds'])('%s accumulates de-duplicated embeds after existing ones', (type) => {
    const s = run([ev(type, { embeds: ['<a>', '<b>'] }), ev(type, { embeds: ['<b>', '<c>'] })]);
    expect(msg(s).embeds).toEqual(['<a>', '<b>', '<c>']);
  });

  it.each(['files', 'chat:message:files'])('%s accumulates de-duplicated files', (type) => {
    const s = run([
      ev(type, { files: [{ id: 'f1', name: 'a.txt' }] }),
      ev(type, { files: [{ id: 'f1', name: 'a.txt' }, { id: 'f2', name: 'b.txt' }] })
    ]);
    expect(msg(s).files).toEqual([{ id: 'f1', name: 'a.txt' }, { id: 'f2', name: 'b.txt' }]);
  });

  it.each(['source', 'citation'])('%s appends a source; typed entries are not sources', (type) => {
    const src = { source: { name: 'doc' }, document: ['text'], metadata: [{ source: 'x' }] };
    const s = run([ev(type, src), ev(type, { type: 'code_execution', id: 'x' })]);
    expect(msg(s).sources).toEqual([src]);
  });

  it('chat:completion replaces content, marks done, stores sources, usage, error and title', () => {
    const s = run([
      ev('message', { content: 'partial' }),
      ev('chat:completion', { content: 'whole answer' }),
      ev('chat:completion', { done: true, usage: { total_tokens: 7 }, sources: [{ s: 1 }], title: 'Greeting' })
    ]);
    expect(msg(s).content).toBe('whole answer');
    expect(msg(s).done).toBe(true);
    expect(msg(s).usage).toEqual({ total_tokens: 7 });
    expect(msg(s).sources).toEqual([{ s: 1 }]);
    expect(s.title).toBe('Greeting');
    const e = run([ev('chat:completion', { error: { content: 'boom' } })]);
    expect(msg(e).error).toEqual({ content: 'boom' });
    expect(msg(e).done).toBe(false);
  });

  it('chat:completion without content keeps the content', () => {
    const s = run([ev('message', { content: 'kept' }), ev('chat:completion', { done: true })]);
    expect(msg(s).content).toBe('kept');
  });

  it('chat:message:error stores the error', () => {
    const s = run([ev('chat:message:error', { error: { content: 'rate limited' } })]);
    expect(msg(s).error).toEqual({ content: 'rate limited' });
  });

  it('chat:message:follow_ups stores the follow-ups', () => {
    const s = run([ev('chat:message:follow_ups', { follow_ups: ['Why?', 'How?'] })]);
    expect(msg(s).followUps).toEqual(['Why?', 'How?']);
  });

  it('chat:title and chat:tags update the chat', () => {
    const s = run([ev('chat:title', 'Weather in Paris'), ev('chat:tags', ['travel'])]);
    expect(s.title).toBe('Weather in Paris');
    expect(s.tags).toEqual(['travel']);
    const t = run([ev('chat:title', { title: 'Object form' })]);
    expect(t.title).toBe('Object form');
  });

  it('chat:active shows and hides the stop button', () => {
    const on = run([ev('chat:active', { active: true })]);
    expect(on.active).toBe(true);
    expect(applyChatEvent(on, ev('chat:active', { active: false })).active).toBe(false);
  });

  it('chat:tasks:cancel marks the message done and stops', () => {
    const s = run([ev('chat:active', { active: true }), ev('message', { content: 'x' }), ev('chat:tasks:cancel', {})]);
    expect(msg(s).done).toBe(true);
    expect(s.active).toBe(false);
  });

  it('notification queues a toast', () => {
    const s = run([ev('notification', { type: 'success', content: 'Saved' })]);
    expect(s.notifications).toEqual([{ type: 'success', content: 'Saved' }]);
  });

  it('unknown types change nothing but are kept for listeners', () => {
    const e = ev('execute:python', { code: '1' });
    const s = run([e]);
    expect(s.messages).toEqual({});
    expect(s.unknown).toEqual([e]);
  });

  it('ignores other chats and malformed events', () => {
    const s = emptyChat('c1');
    expect(applyChatEvent(s, ev('message', { content: 'x' }, 'm1', 'other'))).toBe(s);
    expect(applyChatEvent(s, { chat_id: 'c1', message_id: 'm1' } as any)).toBe(s);
    expect(applyChatEvent(s, null as any)).toBe(s);
  });

  it('never mutates its input', () => {
    const s0 = run([ev('message', { content: 'a' }), ev('status', { description: 's' })]);
    const frozen = JSON.stringify(s0);
    run([ev('message', { content: 'b' }), ev('status', { description: 't' }), ev('files', { files: [{ id: 1 }] })], s0);
    expect(JSON.stringify(s0)).toBe(frozen);
  });

  it('creates a placeholder assistant message and makes it current', () => {
    const s = run([ev('message', { content: 'hi' }, 'new')]);
    expect(msg(s, 'new')).toMatchObject({ id: 'new', role: 'assistant', content: 'hi', parentId: null });
    expect(s.currentId).toBe('new');
  });

  it('an answer started in another tab follows the thread shown, which stays visible', () => {
    const shown = chatFromRecord({
      id: 'c1',
      chat: { history: { currentId: 'a1', messages: { u1: { id: 'u1', parentId: null, role: 'user', content: 'q' }, a1: { id: 'a1', parentId: 'u1', role: 'assistant', content: 'r', done: true } } } }
    });
    const s = run([ev('message', { content: 'second answer' }, 'a2')], shown);
    expect(s.currentId).toBe('a2');
    expect(messageList(s).map((m) => m.id)).toEqual(['u1', 'a1', 'a2']);
    // events of a known message keep the current one
    expect(applyChatEvent(s, ev('status', { description: 'x' }, 'a1')).currentId).toBe('a2');
  });

  it('a stream replayed from the start yields the same message as the live one', () => {
    const events = [
      ev('status', { description: 'Thinking' }),
      ev('chat:message:delta', { content: 'The ' }),
      ev('chat:message:delta', { content: 'answer' }),
      ev('citation', { source: { name: 's' } }),
      ev('chat:completion', { done: true })
    ];
    expect(run(events)).toEqual(run(events));
  });
});

describe('chat helpers', () => {
  it('chatFromRecord reads the Open WebUI shape and messageList follows parent links', () => {
    const s = chatFromRecord({
      id: 'c9',
      title: 'T',
      chat: {
        history: {
          currentId: 'a',
          messages: {
            u: { id: 'u', parentId: null, role: 'user', content: 'q' },
            a: { id: 'a', parentId: 'u', role: 'assistant', content: 'r' }
          }
        }
      }
    });
    expect(s.id).toBe('c9');
    expect(messageList(s).map((m) => m.id)).toEqual(['u', 'a']);
  });

  it('accumulate ignores non-arrays', () => {
    expect(accumulate([1], 'x')).toEqual([1]);
  });
});

describe('conversation tree', () => {
  const tree = (): ChatState => ({
    ...emptyChat('c1'),
    messages: {
      u1: { id: 'u1', parentId: null, role: 'user', content: 'one' },
      a1: { id: 'a1', parentId: 'u1', role: 'assistant', content: 'A1', done: true },
      a1b: { id: 'a1b', parentId: 'u1', role: 'assistant', content: 'A1b', done: true },
      u2: { id: 'u2', parentId: 'a1b', role: 'user', content: 'two' }
    },
    currentId: 'u2'
  });

  it('chat:messages adds the stored turn and makes the answer current, keeping live content', () => {
    const live = run([ev('chat:message:delta', { content: 'Hi' }, 'a2')], tree());
    const s = applyChatEvent(live, ev('chat:messages', {
      messages: {
        u3: { id: 'u3', parentId: 'a1', role: 'user', content: 'q' },
        a2: { id: 'a2', parentId: 'u3', role: 'assistant', content: '', model: 'tiny', done: false }
      },
      currentId: 'a2'
    }, 'a2'));
    expect(s.currentId).toBe('a2');
    expect(s.messages.a2).toMatchObject({ content: 'Hi', parentId: 'u3', model: 'tiny' });
    expect(messageList(s).map((m) => m.id)).toEqual(['u1', 'a1', 'u3', 'a2']);
  });

  it('siblings, the newest leaf and the path follow the parent links', () => {
    const s = tree();
    expect(siblingsOf(s, s.messages.a1).map((m) => m.id)).toEqual(['a1', 'a1b']);
    expect(siblingsOf(s, s.messages.u1).map((m) => m.id)).toEqual(['u1']);
    expect(leafOf(s, 'a1b')).toBe('u2');
    expect(leafOf(s, 'a1')).toBe('a1');
    expect(pathTo(s, 'u2').map((m) => m.id)).toEqual(['u1', 'a1b', 'u2']);
  });

  it('records how an answer ended', () => {
    expect(msg(run([ev('chat:message:delta', { content: 'x' }), ev('chat:completion', { done: true })])).outcome).toBe('done');
    expect(msg(run([ev('chat:message:delta', { content: 'x' }), ev('chat:tasks:cancel', {})])).outcome).toBe('stopped');
    const failed = run([ev('chat:message:error', { error: { content: 'down' } }), ev('chat:completion', { done: true })]);
    expect(outcomeOf(msg(failed))).toBe('failed');
    expect(msg(run([ev('chat:completion', { done: true, outcome: 'interrupted' })])).outcome).toBe('interrupted');
    expect(outcomeOf({ id: 'x', role: 'assistant', content: '', done: false })).toBeNull();
  });
});

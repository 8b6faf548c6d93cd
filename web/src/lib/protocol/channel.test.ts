import { describe, expect, it } from 'vitest';
import {
  addPending,
  applyChannelEvent,
  emptyChannels,
  expireTyping,
  openChannel,
  openThread,
  reactedBy,
  reactionNames,
  TYPING_TTL_MS,
  typingLine,
  withChannels
} from './channel';
import type { ChannelEvent, ChannelMessage, ChannelsState } from './types';

const ada = { id: 'u-ada', name: 'Ada' };
const bob = { id: 'u-bob', name: 'Bob' };
let clock = 1_000;
const m = (id: string, extra: Partial<ChannelMessage> = {}): ChannelMessage => ({
  id,
  channel_id: 'ch1',
  user_id: ada.id,
  parent_id: null,
  content: `text ${id}`,
  reply_count: 0,
  reactions: [],
  created_at: clock++,
  updated_at: clock,
  user: ada,
  ...extra
});
const ev = (type: string, data: unknown, channel_id = 'ch1', user = ada, message_id: string | null = null): ChannelEvent => ({
  channel_id,
  message_id,
  data: { type, data },
  user
});

function base(): ChannelsState {
  const s = withChannels(emptyChannels(bob.id), [
    { id: 'ch1', name: 'general', unread_count: 3 },
    { id: 'ch2', name: 'random', unread_count: 0 }
  ]);
  return openChannel(s, 'ch1', [m('b'), m('a')].reverse().reverse());
}

describe('applyChannelEvent', () => {
  it('openChannel shows oldest first and clears the unread count', () => {
    const s = openChannel(withChannels(emptyChannels('x'), [{ id: 'ch1', name: 'g', unread_count: 4 }]), 'ch1', [m('2'), m('1')]);
    expect(s.messages.map((x) => x.id)).toEqual(['1', '2']);
    expect(s.channels[0].unread_count).toBe(0);
  });

  it('message appends to the open channel, once', () => {
    const s0 = base();
    const msg = m('c');
    const s1 = applyChannelEvent(s0, ev('message', msg));
    const s2 = applyChannelEvent(s1, ev('message', msg));
    expect(s2.messages.map((x) => x.id)).toEqual([...s0.messages.map((x) => x.id), 'c']);
  });

  it('message replaces the optimistic copy with the same temp_id', () => {
    const s0 = addPending(base(), m('tmp-1', { temp_id: 'tmp-1', user_id: bob.id }));
    expect(s0.messages.at(-1)?.pending).toBe(true);
    const s1 = applyChannelEvent(s0, ev('message', m('real', { temp_id: 'tmp-1', user_id: bob.id }), 'ch1', bob));
    expect(s1.messages.filter((x) => x.temp_id === 'tmp-1')).toHaveLength(1);
    expect(s1.messages.at(-1)).toMatchObject({ id: 'real', pending: false });
  });

  it('message in another channel counts as unread (not my own, not replies)', () => {
    let s = applyChannelEvent(base(), ev('message', m('x', { channel_id: 'ch2' }), 'ch2'));
    s = applyChannelEvent(s, ev('message', m('y', { channel_id: 'ch2', user_id: bob.id }), 'ch2', bob));
    s = applyChannelEvent(s, ev('message', m('z', { channel_id: 'ch2', parent_id: 'x' }), 'ch2'));
    expect(s.channels.find((c) => c.id === 'ch2')?.unread_count).toBe(1);
    expect(s.messages.find((x) => x.id === 'x')).toBeUndefined();
  });

  it('a reply goes to its open thread, and message:reply updates the parent count', () => {
    let s = openThread(base(), 'a', []);
    const parentId = s.messages[0].id;
    s = openThread(s, parentId, []);
    s = applyChannelEvent(s, ev('message', m('r1', { parent_id: parentId })));
    s = applyChannelEvent(s, ev('message:reply', { ...s.messages[0], reply_count: 1 }, 'ch1', ada, parentId));
    expect(s.threads[parentId].map((x) => x.id)).toEqual(['r1']);
    expect(s.messages[0].reply_count).toBe(1);
    expect(s.messages.find((x) => x.id === 'r1')).toBeUndefined();
  });

  it('a reply to a thread that is not open changes no list', () => {
    const s0 = base();
    const s1 = applyChannelEvent(s0, ev('message', m('r1', { parent_id: 'zzz' })));
    expect(s1.messages).toEqual(s0.messages);
  });

  it('message:update edits the content in place (top level and threads)', () => {
    let s = base();
    const target = s.messages[0];
    s = openThread(s, 'p', [m('t1', { parent_id: 'p' })]);
    s = applyChannelEvent(s, ev('message:update', { ...target, content: 'edited', updated_at: 99 }));
    s = applyChannelEvent(s, ev('message:update', { ...s.threads.p[0], content: 'edited reply' }));
    expect(s.messages[0]).toMatchObject({ id: target.id, content: 'edited', updated_at: 99 });
    expect(s.threads.p[0].content).toBe('edited reply');
  });

  it('message:delete removes the message everywhere', () => {
    let s = openThread(base(), 'p', [m('t1', { parent_id: 'p' })]);
    const id = s.messages[0].id;
    s = applyChannelEvent(s, ev('message:delete', { id }));
    s = applyChannelEvent(s, ev('message:delete', { id: 't1' }));
    expect(s.messages.find((x) => x.id === id)).toBeUndefined();
    expect(s.threads.p).toEqual([]);
  });

  it.each(['message:reaction:add', 'message:reaction:remove'])('%s sets the reactions', (type) => {
    const s0 = base();
    const target = s0.messages[1];
    const reactions = type.endsWith('add') ? [{ name: '👍', user_ids: [ada.id], count: 1 }] : [];
    const s1 = applyChannelEvent(s0, ev(type, { ...target, reactions, name: '👍' }));
    expect(s1.messages[1].reactions).toEqual(reactions);
    expect(s1.messages[0]).toBe(s0.messages[0]);
  });

  it('reactions in the Open WebUI shape (users with names) are kept and read', () => {
    const s0 = base();
    const target = s0.messages[1];
    const reactions = [{ name: '👍', users: [{ id: ada.id, name: 'Ada' }], user_ids: [ada.id], count: 1 }];
    const s1 = applyChannelEvent(s0, ev('message:reaction:add', { ...target, reactions, name: '👍' }));
    const r = s1.messages[1].reactions[0];
    expect(r).toEqual(reactions[0]);
    expect(reactedBy(r, ada.id)).toBe(true);
    expect(reactedBy(r, 'someone-else')).toBe(false);
    expect(reactionNames(r)).toBe('Ada');
    // the older shape still works
    const old = { name: '🎉', user_ids: ['u9'], count: 1 };
    expect(reactedBy(old, 'u9')).toBe(true);
    expect(reactionNames(old)).toBe('u9');
  });

  it('typing shows the name for 5 s, then it expires', () => {
    const now = 50_000;
    const s1 = applyChannelEvent(base(), ev('typing', { typing: true }), now);
    expect(typingLine(s1, 'ch1', now)).toBe('Ada is typing…');
    expect(typingLine(s1, 'ch1', now + TYPING_TTL_MS - 1)).toBe('Ada is typing…');
    expect(typingLine(s1, 'ch1', now + TYPING_TTL_MS)).toBe('');
    const s2 = expireTyping(s1, now + TYPING_TTL_MS + 1);
    expect(s2.typing.ch1).toEqual({});
    expect(expireTyping(s2, now + 10 * TYPING_TTL_MS)).toBe(s2);
  });

  it('typing false, or a message from the typist, ends the indicator', () => {
    const now = 10;
    const s1 = applyChannelEvent(base(), ev('typing', { typing: true }), now);
    expect(typingLine(applyChannelEvent(s1, ev('typing', { typing: false }), now), 'ch1', now)).toBe('');
    expect(typingLine(applyChannelEvent(s1, ev('message', m('n')), now), 'ch1', now)).toBe('');
  });

  it('my own typing is not shown; several typists are summarised', () => {
    const now = 10;
    let s = applyChannelEvent(base(), ev('typing', { typing: true }, 'ch1', bob), now);
    expect(typingLine(s, 'ch1', now)).toBe('');
    s = applyChannelEvent(s, ev('typing', { typing: true }, 'ch1', ada), now);
    s = applyChannelEvent(s, ev('typing', { typing: true }, 'ch1', { id: 'u-cy', name: 'Cy' }), now);
    expect(typingLine(s, 'ch1', now)).toBe('Ada and Cy are typing…');
    s = applyChannelEvent(s, ev('typing', { typing: true }, 'ch1', { id: 'u-di', name: 'Di' }), now);
    expect(typingLine(s, 'ch1', now)).toBe('Several people are typing…');
  });

  it('typing in another channel is kept for that channel', () => {
    const s = applyChannelEvent(base(), ev('typing', { typing: true }, 'ch2'), 5);
    expect(typingLine(s, 'ch1', 5)).toBe('');
    expect(typingLine(s, 'ch2', 5)).toBe('Ada is typing…');
  });

  it('channel:created marks the list stale; withChannels refreshes it', () => {
    const s = applyChannelEvent(base(), ev('channel:created', {}, 'ch3'));
    expect(s.stale).toBe(true);
    expect(withChannels(s, []).stale).toBe(false);
  });

  it('events of a channel that is not open do not touch its messages', () => {
    const s0 = base();
    const other = { ...s0.messages[0], channel_id: 'ch2' };
    for (const type of ['message:update', 'message:delete', 'message:reaction:add', 'message:reply']) {
      expect(applyChannelEvent(s0, ev(type, other, 'ch2')).messages).toBe(s0.messages);
    }
  });

  it('unknown and malformed events change nothing', () => {
    const s0 = base();
    expect(applyChannelEvent(s0, ev('something:new', {}))).toBe(s0);
    expect(applyChannelEvent(s0, ev('message', null))).toBe(s0);
    expect(applyChannelEvent(s0, { channel_id: 'ch1' } as any)).toBe(s0);
  });

  it('never mutates its input', () => {
    const s0 = openThread(base(), 'p', [m('t1', { parent_id: 'p' })]);
    const frozen = JSON.stringify(s0);
    let s = s0;
    for (const e of [
      ev('message', m('q')),
      ev('message:update', { ...s0.messages[0], content: 'x' }),
      ev('message:delete', { id: 't1' }),
      ev('typing', { typing: true }),
      ev('message', m('o', { channel_id: 'ch2' }), 'ch2')
    ])
      s = applyChannelEvent(s, e);
    expect(JSON.stringify(s0)).toBe(frozen);
  });
});

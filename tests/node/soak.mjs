// The soak's load generator: many official socket.io-client tabs in one Node process, with mixed traffic.
//
// Usage: node soak.mjs CONFIG.json RESULT.json
//   CONFIG: {url, seconds, seed, rates: {typing, post, generate, edit} (mean seconds between actions of one tab),
//            tabs: [{user, token, chatId, channelIds: [..], noteId}]}
// Each tab connects (websocket), joins (user-join) and its note's document, then for `seconds` does, at random
// (exponential) intervals: typing in one of its channels, a channel post over REST, a demo generation streamed to
// its user room (POST /api/chat/completions), an insert into the note's Yjs document (ydoc:document:update with a
// real Yjs update). Every tab records what it receives. After the traffic: wait for generations to finish, settle,
// ask the server for each note's state, and write everything to RESULT. Progress: JSON lines on stdout
// ({"event": "connected"}, {"event": "finished"}).
import * as Y from 'yjs';
import { io } from 'socket.io-client';
import { readFileSync, writeFileSync } from 'node:fs';

const [configPath, resultPath] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let seed = config.seed ?? 1;
const random = () => {
	seed = (seed + 0x6d2b79f5) | 0;
	let t = seed;
	t = Math.imul(t ^ (t >>> 15), t | 1);
	t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
	return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const exponential = (meanSeconds) => -Math.log(1 - random()) * meanSeconds * 1000;

const counts = { eventsReceived: 0, typing: 0, posts: 0, generations: 0, edits: 0, actionsFailed: 0 };
const errors = [];
const t0 = Date.now();
const error = (tab, what) => {
	if (errors.length < 200) errors.push({ tab: tab.index, at: Math.round((Date.now() - t0) / 1000), what: String(what).slice(0, 300) });
	counts.errorsTotal = (counts.errorsTotal ?? 0) + 1;
};

async function rest(tab, method, path, body) {
	const response = await fetch(config.url + path, {
		method,
		headers: { Authorization: `Bearer ${tab.token}`, 'Content-Type': 'application/json' },
		body: body === undefined ? undefined : JSON.stringify(body)
	});
	if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${(await response.text()).slice(0, 200)}`);
	return response.json();
}

function makeTab(spec, index) {
	const tab = {
		...spec,
		index,
		messages: {}, // "chatId/messageId" -> {content, done}
		channelMessages: {}, // channelId -> [content]
		posts: [], // [{channelId, content}] acknowledged by the server
		generations: [], // [{chatId, messageId, prompt}] accepted by the server
		inserts: [], // tokens this tab inserted into the note
		documentId: `note:${spec.noteId}`,
		doc: new Y.Doc(),
		synced: false,
		closing: false,
		counter: 0
	};
	tab.list = tab.doc.getArray('soak');
	const socket = io(config.url, {
		path: '/ws/socket.io',
		transports: ['websocket'],
		auth: { token: spec.token },
		reconnection: false,
		timeout: 60000
	});
	tab.socket = socket;
	socket.on('events', (payload) => {
		counts.eventsReceived += 1;
		if (!payload || !payload.data || !payload.message_id) return;
		const key = `${payload.chat_id}/${payload.message_id}`;
		const { type, data } = payload.data;
		const message = (tab.messages[key] ??= { content: '', done: false });
		if ((type === 'chat:message:delta' || type === 'message') && data && typeof data.content === 'string')
			message.content += data.content;
		else if ((type === 'replace' || type === 'chat:message') && data) message.content = data.content;
		else if (type === 'chat:completion' && data && data.done) message.done = true;
	});
	socket.on('events:channel', (payload) => {
		counts.eventsReceived += 1;
		if (payload && payload.data && payload.data.type === 'message') {
			(tab.channelMessages[payload.channel_id] ??= []).push(payload.data.data.content);
		}
	});
	socket.on('ydoc:document:update', (data) => {
		counts.eventsReceived += 1;
		if (data.document_id !== tab.documentId || data.socket_id === socket.id || !data.update) return;
		Y.applyUpdate(tab.doc, new Uint8Array(data.update), 'server');
	});
	socket.on('ydoc:document:state', (data) => {
		counts.eventsReceived += 1;
		if (data.document_id !== tab.documentId) return;
		if (tab.onState) tab.onState(data.state);
		else {
			Y.applyUpdate(tab.doc, new Uint8Array(data.state), 'server');
			tab.synced = true;
		}
	});
	socket.on('disconnect', (reason) => {
		if (!tab.closing) error(tab, `disconnected: ${reason}`);
	});
	tab.doc.on('update', (update, origin) => {
		if (origin === 'server') return;
		socket
			.timeout(60000)
			.emit('ydoc:document:update', { document_id: tab.documentId, update: Array.from(update) }, (err, ack) => {
				if (err) error(tab, 'ydoc update: no ack in 60 s');
				else if (ack && ack.error) error(tab, `ydoc update: ${JSON.stringify(ack.error)}`);
			});
	});
	tab.ready = new Promise((resolve) => {
		socket.on('connect_error', (err) => {
			error(tab, `connect_error: ${err.message}`);
			resolve(false);
		});
		socket.once('connect', async () => {
			try {
				const joined = await socket.timeout(60000).emitWithAck('user-join', { auth: { token: spec.token } });
				if (joined && joined.error) throw new Error(`user-join: ${JSON.stringify(joined.error)}`);
				const ack = await socket.timeout(60000).emitWithAck('ydoc:document:join', { document_id: tab.documentId });
				if (ack && ack.error) throw new Error(`ydoc join: ${JSON.stringify(ack.error)}`);
				resolve(true);
			} catch (err) {
				error(tab, err.message);
				resolve(false);
			}
		});
	});
	return tab;
}

const actions = {
	typing(tab) {
		const channelId = tab.channelIds[Math.floor(random() * tab.channelIds.length)];
		counts.typing += 1;
		tab.socket.emit('events:channel', { channel_id: channelId, data: { type: 'typing', data: { typing: true } } });
		return Promise.resolve();
	},
	async post(tab) {
		const channelId = tab.channelIds[Math.floor(random() * tab.channelIds.length)];
		const content = `post ${tab.index}.${tab.counter++} ${'lorem ipsum '.repeat(1 + Math.floor(random() * 8))}`;
		await rest(tab, 'POST', `/api/v1/channels/${channelId}/messages/post`, { content });
		tab.posts.push({ channelId, content });
		counts.posts += 1;
	},
	async generate(tab) {
		const messageId = `m-${tab.index}-${tab.counter++}`;
		const words = 20 + Math.floor(random() * 100);
		const prompt = `soak ${messageId}: write ${words} tokens`;
		await rest(tab, 'POST', '/api/chat/completions', {
			model: 'demo',
			messages: [{ role: 'user', content: prompt }],
			chat_id: tab.chatId,
			id: messageId,
			stream: true
		});
		tab.generations.push({ chatId: tab.chatId, messageId, prompt });
		counts.generations += 1;
	},
	edit(tab) {
		const token = `t${tab.index}.${tab.counter++}`;
		const index = Math.floor(random() * (tab.list.length + 1));
		tab.list.insert(index, [token]);
		tab.inserts.push(token);
		counts.edits += 1;
		return Promise.resolve();
	}
};

async function runTab(tab, until) {
	const next = {};
	const now = Date.now();
	for (const kind of Object.keys(actions)) next[kind] = now + exponential(config.rates[kind]);
	while (true) {
		const [kind, at] = Object.entries(next).reduce((a, b) => (b[1] < a[1] ? b : a));
		if (at >= until) return;
		await sleep(Math.max(0, at - Date.now()));
		next[kind] = at + exponential(config.rates[kind]);
		if (tab.socket.disconnected) return;
		try {
			await actions[kind](tab);
		} catch (err) {
			counts.actionsFailed += 1;
			error(tab, `${kind}: ${err.message}${err.cause ? ` (${err.cause.code ?? err.cause.message})` : ''}`);
		}
	}
}

async function waitUntil(predicate, ms) {
	const end = Date.now() + ms;
	while (!predicate() && Date.now() < end) await sleep(100);
	return predicate();
}

const started = Date.now();
const tabs = [];
// Connect in waves, as users arrive: 50 tabs every 100 ms.
for (let i = 0; i < config.tabs.length; i++) {
	tabs.push(makeTab(config.tabs[i], i));
	if (i % 50 === 49) await sleep(100);
}
const readiness = await Promise.all(tabs.map((tab) => tab.ready));
await waitUntil(() => tabs.every((tab) => tab.synced || !tab.socket.connected), 60000);
out({ event: 'connected', tabs: tabs.length, ok: readiness.filter(Boolean).length, ms: Date.now() - started });

const until = Date.now() + config.seconds * 1000;
await Promise.all(tabs.map((tab) => runTab(tab, until)));
out({ event: 'traffic-over' });

// Every accepted generation ends (done) in every tab of its user; every post reaches every member tab.
const byUser = {};
for (const tab of tabs) (byUser[tab.user] ??= []).push(tab);
const pendingGenerations = () =>
	tabs.some((tab) =>
		tab.generations.some((g) =>
			byUser[tab.user].some((peer) => peer.socket.connected && !peer.messages[`${g.chatId}/${g.messageId}`]?.done)
		)
	);
if (!(await waitUntil(() => !pendingGenerations(), 120000))) error({ index: -1 }, 'generations not done in 120 s');
await sleep(2000); // let the last channel events and document updates arrive

// The server's state of each note, as a joining client would get it.
const noteStates = {};
const owners = {};
for (const tab of tabs) if (tab.socket.connected && !owners[tab.noteId]) owners[tab.noteId] = tab;
await Promise.all(
	Object.values(owners).map(
		(tab) =>
			new Promise((resolve) => {
				const timer = setTimeout(() => {
					error(tab, 'no ydoc:document:state at the end');
					resolve();
				}, 30000);
				tab.onState = (state) => {
					clearTimeout(timer);
					const fresh = new Y.Doc();
					Y.applyUpdate(fresh, new Uint8Array(state));
					noteStates[tab.noteId] = fresh.getArray('soak').toArray();
					resolve();
				};
				tab.socket
					.timeout(30000)
					.emit('ydoc:document:state', { document_id: tab.documentId }, (err, ack) => {
						if (err) error(tab, 'ydoc:document:state: no ack in 30 s');
						else if (ack && ack.error) error(tab, `ydoc:document:state: ${JSON.stringify(ack.error)}`);
					});
			})
	)
);

const result = {
	seconds: config.seconds,
	counts,
	errors,
	noteStates,
	tabs: tabs.map((tab) => ({
		user: tab.user,
		connected: tab.socket.connected,
		noteId: tab.noteId,
		messages: tab.messages,
		channelMessages: tab.channelMessages,
		posts: tab.posts,
		generations: tab.generations,
		inserts: tab.inserts,
		doc: tab.list.toArray()
	}))
};
writeFileSync(resultPath, JSON.stringify(result));
out({ event: 'finished', ...counts, errors: errors.length });
for (const tab of tabs) {
	tab.closing = true;
	tab.socket.close();
}
process.exit(0);

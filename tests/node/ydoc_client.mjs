// A Yjs collaborator driven by chatwire's interop tests: the official socket.io-client plus npm `yjs`.
//
// Usage: node ydoc_client.mjs '<json options>'
//   {url, token, documentId, mode: "edit" | "read", init?: bool, edits?: n, peers?: n, seed?: n}
//
// The document has the shape Open WebUI's editor (y-prosemirror) gives a note: the XmlFragment "prosemirror"
// holding a <paragraph> element whose XmlText carries the text. "edit" mode makes `edits` random inserts and
// deletes in that XmlText, each sent as its own ydoc:document:update (bytes as an array of integers, like the
// original client), after the test writes "go" on stdin; it then waits until it has received the updates of
// its `peers` other editors (edits each) and prints its final text. "read" mode joins and prints the text of
// ydoc:document:state. Output: one JSON line per step ({"event": "ready" | "final", ...}).
import * as Y from 'yjs';
import { io } from 'socket.io-client';
import readline from 'node:readline';

const opts = JSON.parse(process.argv[2]);
const edits = opts.edits ?? 0;
const peers = opts.peers ?? 0;
let seed = opts.seed ?? 1;
const random = () => {
	// mulberry32: reproducible runs for a given seed
	seed = (seed + 0x6d2b79f5) | 0;
	let t = seed;
	t = Math.imul(t ^ (t >>> 15), t | 1);
	t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
	return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789éü日本';
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const fail = (message) => {
	out({ event: 'error', message });
	process.exit(1);
};

const doc = new Y.Doc();
const fragment = doc.getXmlFragment('prosemirror');
const socket = io(opts.url, {
	path: '/ws/socket.io',
	transports: ['websocket'],
	auth: { token: opts.token },
	reconnection: false
});

let received = 0;
let stateSeen = false;
let pendingAcks = 0;
const errors = [];

const paragraphText = () => {
	const paragraph = fragment.get(0);
	return paragraph instanceof Y.XmlElement ? paragraph.get(0) : null;
};
const result = () => {
	const text = paragraphText();
	return { text: text ? text.toString() : null, xml: fragment.toString() };
};

// Like Open WebUI's editor: after remote edits, send the merged content in a save-only message (debounced),
// and send a pending one before leaving.
let contentTimer = null;
const sendContent = () => {
	contentTimer = null;
	pendingAcks += 1;
	socket.emit(
		'ydoc:document:update',
		{ document_id: opts.documentId, data: { content: { md: result().text } } },
		(ack) => {
			pendingAcks -= 1;
			if (ack && ack.error) errors.push(ack.error);
		}
	);
};

socket.on('ydoc:document:update', (data) => {
	if (data.document_id !== opts.documentId || data.socket_id === socket.id) return;
	Y.applyUpdate(doc, new Uint8Array(data.update), 'server');
	received += 1;
	if (contentTimer) clearTimeout(contentTimer);
	contentTimer = setTimeout(sendContent, 500);
});

doc.on('update', (update, origin) => {
	if (origin === 'server') return;
	pendingAcks += 1;
	socket.emit(
		'ydoc:document:update',
		{ document_id: opts.documentId, update: Array.from(update), data: { content: { md: result().text } } },
		(ack) => {
			pendingAcks -= 1;
			if (ack && ack.error) errors.push(ack.error);
		}
	);
});

const waitFor = (predicate, what, timeoutMs = 60000) =>
	new Promise((resolve) => {
		const started = Date.now();
		const tick = () => {
			if (predicate()) return resolve();
			if (Date.now() - started > timeoutMs) fail(`timed out waiting for ${what}`);
			setTimeout(tick, 5);
		};
		tick();
	});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const editOnce = () => {
	const text = paragraphText();
	const length = text.length;
	if (length > 0 && random() < 0.35) {
		const index = Math.floor(random() * length);
		const count = 1 + Math.floor(random() * Math.min(3, length - index));
		text.delete(index, count);
	} else {
		const index = Math.floor(random() * (length + 1));
		let chunk = '';
		const n = 1 + Math.floor(random() * 3);
		for (let i = 0; i < n; i++) chunk += ALPHABET[Math.floor(random() * ALPHABET.length)];
		text.insert(index, chunk);
	}
};

socket.on('connect_error', (err) => fail(`connect_error: ${err.message}`));

socket.on('connect', async () => {
	const joinAck = await socket.emitWithAck('user-join', { auth: { token: opts.token } });
	if (joinAck && joinAck.error) fail(`user-join: ${JSON.stringify(joinAck.error)}`);
	socket.on('ydoc:document:state', (data) => {
		if (data.document_id !== opts.documentId) return;
		Y.applyUpdate(doc, new Uint8Array(data.state), 'server');
		stateSeen = true;
	});
	const ack = await socket.emitWithAck('ydoc:document:join', {
		document_id: opts.documentId,
		user_id: 'spoofed-id',
		user_name: 'Spoofed Name',
		user_color: '#45B7D1'
	});
	if (ack && ack.error) {
		out({ event: 'refused', error: ack.error });
		socket.close();
		return;
	}
	await waitFor(() => stateSeen, 'ydoc:document:state');

	if (opts.mode === 'read') {
		out({ event: 'final', ...result() });
		socket.close();
		return;
	}

	if (opts.init && fragment.length === 0) {
		doc.transact(() => {
			const paragraph = new Y.XmlElement('paragraph');
			paragraph.insert(0, [new Y.XmlText('')]);
			fragment.insert(0, [paragraph]);
		});
	}
	await waitFor(() => paragraphText() !== null, 'the paragraph');
	await waitFor(() => pendingAcks === 0, 'acks of the set-up');
	out({ event: 'ready', sid: socket.id });

	const rl = readline.createInterface({ input: process.stdin });
	await new Promise((resolve) => rl.once('line', resolve));
	rl.close();

	for (let i = 0; i < edits; i++) {
		editOnce();
		if (random() < 0.5) await sleep(Math.floor(random() * 4));
	}
	await waitFor(() => pendingAcks === 0, 'acks of my edits');
	await waitFor(() => received >= peers * edits, `updates of ${peers} peers`);
	if (contentTimer) {
		clearTimeout(contentTimer);
		sendContent();
	}
	await waitFor(() => pendingAcks === 0, 'acks of the content');
	out({ event: 'final', ...result(), received, errors });
	await socket.emitWithAck('ydoc:document:leave', { document_id: opts.documentId });
	await sleep(50);
	socket.close();
});

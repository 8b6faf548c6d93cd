import { mount } from 'svelte';
import App from './App.svelte';
import './app.css';
import { app } from './lib/app.svelte';

// A handle for debugging from the console and for the browser tests (e.g. to cut the connection).
(window as unknown as { chatwire: typeof app }).chatwire = app;

export default mount(App, { target: document.getElementById('app')! });

// chatwire's client protocol library: framework-free, used by the Svelte pages and by tests.
export * from './types';
export * from './chat';
export * from './channel';
export * from './api';
export * from './connection';
export * from './collab';

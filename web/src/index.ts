export {
  VoiceEventsClient,
  VoiceEventsError,
  backoffDelay,
  resolveWsUrl,
  type BackoffOptions,
  type ConnectionStatus,
  type EventMeta,
  type OpenInfo,
  type Timers,
  type VoiceEventsClientOptions,
  type VoiceEventsErrorCode,
  type WebSocketConstructor,
  type WebSocketLike,
} from './client.ts';
export * from './protocol.ts';
export { requestRejoin, type RejoinErrorCode, type RejoinResult } from './rejoin.ts';
export { useVoiceChannelEvents, type UseVoiceChannelEventsOptions, type UseVoiceChannelEventsResult } from './useVoiceChannelEvents.ts';
export { VoiceDropoutModal, type VoiceDropoutModalProps } from './VoiceDropoutModal.tsx';
export { GameRoom, type GameRoomProps } from './GameRoom.tsx';

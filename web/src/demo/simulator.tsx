import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import '../styles.css';
import { SimulatorPanel } from './SimulatorPanel.tsx';

const root = document.getElementById('root');
if (root === null) throw new Error('no #root');
createRoot(root).render(
  <StrictMode>
    <div className="vw-page">
      <p>
        <a href="/">← voicewatch demo</a> · <a href="/room.html">game room</a>
      </p>
      <SimulatorPanel />
    </div>
  </StrictMode>,
);

// Every panel registers for its feed events on import; then the feed connects.
import {connect} from './feed.js';
import './nodes.js';
import './charts.js';
import './audit.js';

connect();
